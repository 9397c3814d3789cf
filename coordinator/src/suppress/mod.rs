//! Suppression (placeholder).
