//! Packing token streams into fixed-length rows: CPT concatenation, whole-document best-fit,
//! mixture weights and the global shuffle.
