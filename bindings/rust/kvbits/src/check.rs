//! Slice-length checks made in Rust before a call, so that a wrong length is an
//! `InvalidArgument` error with a clear message instead of the library reading past a buffer.
use crate::error::{Error, Result};

/// `a * b * c` as a count of elements, refusing overflow.
pub(crate) fn elements(what: &str, factors: &[(&str, u64)]) -> Result<usize> {
    let mut n: u64 = 1;
    for (_, f) in factors {
        n = n.checked_mul(*f).ok_or_else(|| Error::invalid(format!("{} overflows: {}", what, describe(factors))))?;
    }
    if n > usize::MAX as u64 {
        return Err(Error::invalid(format!("{} overflows the address space: {}", what, describe(factors))));
    }
    Ok(n as usize)
}

fn describe(factors: &[(&str, u64)]) -> String {
    factors.iter().map(|(name, v)| format!("{} {}", name, v)).collect::<Vec<_>>().join(" x ")
}

/// Fails unless `got == product of factors`; the message names the slice and the factors.
pub(crate) fn len(what: &str, got: usize, factors: &[(&str, u64)]) -> Result<()> {
    let want = elements(what, factors)?;
    if got != want {
        return Err(Error::invalid(format!(
            "{} has {} elements; expected {} ({})",
            what,
            got,
            want,
            describe(factors)
        )));
    }
    Ok(())
}

/// Fails unless two per-sequence arrays have the same length.
pub(crate) fn same_len(a: &str, a_len: usize, b: &str, b_len: usize) -> Result<()> {
    if a_len != b_len {
        return Err(Error::invalid(format!(
            "{} has {} entries but {} has {}: one entry per sequence in both",
            a, a_len, b, b_len
        )));
    }
    Ok(())
}

/// Sum of per-sequence token counts, as u64 (cannot overflow for any slice length).
pub(crate) fn sum(counts: &[u32]) -> u64 {
    counts.iter().map(|&n| u64::from(n)).sum()
}
