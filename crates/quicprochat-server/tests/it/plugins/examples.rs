//! The example plugins an operator runs, end to end (see below).
