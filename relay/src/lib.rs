//! Media plane (sans-IO).
