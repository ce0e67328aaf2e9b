//! Integration tests: the real `jdop` binary against the built-in simulator over
//! real HTTP on 127.0.0.1, output read back with the Parquet/Arrow/CSV readers.

mod demo;
mod export;
mod failure;
mod faults;
mod hostile;
mod readers;
mod schema;
mod sync;
mod typed;
mod util;
