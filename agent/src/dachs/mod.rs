//! The local DaCHS server, one file per family of things the agent asks of it: the `dachs`
//! commands ([`cli`]), resource descriptors ([`rd`]) and the TAP service ([`tap`], [`votable`]).

pub mod cli;
pub mod gavo_rc;
pub mod rd;
pub mod scratch;
pub mod tap;
pub mod votable;
