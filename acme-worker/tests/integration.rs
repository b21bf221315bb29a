//! The integration tests of acme-worker: the real `berth-acme` binary, one module per subject. They build as one test binary
//! (one link, one copy on disk); tests of different modules run side by side, so a test that
//! must be alone with a shared resource (the Docker daemon, the Swarm) takes its lock.

mod common;

mod cli;
mod dns;
mod feed;
mod pebble;
