//! A log record, whatever bytes a label, a file or a client put into it, is written as exactly
//! one line: no line break, line separator or control character survives inside it, and it
//! is cut at the record limit.
#![no_main]

use berth_core::logging::{one_line, MAX_RECORD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    let mut out = Vec::new();
    one_line(record, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    let text = std::str::from_utf8(&out).expect("UTF-8");
    let line = &text[..text.len() - 1];
    for c in line.chars() {
        assert!(
            !c.is_control() && c != '\u{2028}' && c != '\u{2029}',
            "{c:?} in {line:?}"
        );
    }
    assert!(line.len() <= MAX_RECORD + 32, "{}", line.len());
});
