//! Writing to standard output. A reader that goes away (`tally results | head`) is not an
//! error worth a backtrace: the command stops quietly with success, as Unix tools do.

use std::io::Write;

pub fn write_stdout(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // Exiting runs no destructors: stop the demo's servers here.
            tally_localnet::kill_all_children();
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        tally_localnet::kill_all_children();
        std::process::exit(i32::from(crate::outcome::EXIT_FAILURE));
    }
}

/// `println!` that stops quietly when the reader has gone away.
#[macro_export]
macro_rules! say {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that stops quietly when the reader has gone away.
#[macro_export]
macro_rules! say_part {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}
