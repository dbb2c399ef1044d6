//! gfp tables of past kernels, for logs that print no flag names.
