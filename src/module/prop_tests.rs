//! Model-based property test of the core (filled below).
