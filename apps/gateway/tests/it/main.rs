//! Tests of the `colloquy` binary as a process: what only a real process shows.

mod a2a;
mod acp;
mod browser;
mod cluster;
mod crash;
mod logs;
mod process;
mod python;
mod shutdown;
