//! Tests of the `colloquy` binary as a process: what only a real process shows.

mod crash;
mod logs;
mod process;
mod shutdown;
