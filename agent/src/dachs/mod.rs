//! The local DaCHS server, one file per family of things the agent asks of it. For now the TAP
//! service, which the health check queries; the `dachs` command families (val, imp, pub, serve)
//! arrive with the apply stage.

pub mod tap;
pub mod votable;
