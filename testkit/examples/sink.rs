//! The test origin on a fixed address, for profiling by hand:
//! `cargo run --release -p berth-testkit --example sink -- 127.0.0.1:18201`.
fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18201".to_string());
    let origin = berth_testkit::Origin::start_on(
        addr.parse().expect("an address such as 127.0.0.1:18201"),
        "sink",
    );
    println!("sink on {}", origin.addr);
    loop {
        std::thread::park();
    }
}
