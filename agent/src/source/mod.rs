//! The service repository: fetch (git2), verify (optional signatures), materialize as an
//! immutable revision directory, and publish it through the `current` link.

pub mod fetch;
pub mod revisions;
pub mod verify;
