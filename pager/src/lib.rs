//! The fault-driven block pager.
