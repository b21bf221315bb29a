//! The integration tests of proxy: the real `berth` binary, one module per subject. They build as one test binary
//! (one link, one copy on disk); tests of different modules run side by side, so a test that
//! must be alone with a shared resource (the Docker daemon, the Swarm) takes its lock.

mod common;

mod access;
mod acme_challenge;
mod auth;
mod balance;
mod cache;
mod check;
mod client_certs;
mod compression;
mod dashboard;
mod deploy;
mod docker;
mod docs;
mod faults;
mod feed;
mod h2_streams;
mod health;
mod limits;
mod logs;
mod migrate;
mod observability;
mod pages;
mod path_readings;
mod pool;
mod proxy;
mod proxy_protocol;
mod registry;
mod reload;
mod repositories;
mod shutdown;
mod smuggling;
mod startup;
mod swarm;
mod tls;
mod upgrade;
mod uploads;
