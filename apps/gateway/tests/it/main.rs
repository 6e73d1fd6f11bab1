//! Tests of the `colloquy` binary as a process: what only a real process shows.

mod crash;
mod process;
mod shutdown;
