//! One module per subcommand; each parses nothing and prints everything.

pub mod simulate;
