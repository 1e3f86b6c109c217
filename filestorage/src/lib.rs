//! ZODB FileStorage.
