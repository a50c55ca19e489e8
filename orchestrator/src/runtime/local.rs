//! Local runtime: agents as child processes on 127.0.0.1.
