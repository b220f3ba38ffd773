//! What public sources report about the ANE compiler and individual ops (REFERENCE.md
//! §2). Nothing here is measured by this project: each entry is a reported fact with its
//! source, kept as data for the ANE lints to quote.

use super::OpKind;

/// How the ANE compiler is reported to treat an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompilerStatus {
    /// Reported to fail to compile.
    Rejected,
    /// Reported rejected by one project while another uses it in working programs.
    Disputed,
    /// Reported to fail when the size along the op's axis is not a power of two.
    FailsOnNonPowerOfTwoAxis,
    /// Compiles, but the named input has no effect.
    IgnoresInput(&'static str),
}

/// One reported fact about an op on the ANE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompilerNote {
    /// The op the note is about.
    pub kind: OpKind,
    /// What is reported to happen to it.
    pub status: CompilerStatus,
    /// What is reported, and what to do about it.
    pub note: &'static str,
    /// Where it comes from, as REFERENCE.md cites it.
    pub source: &'static str,
}

/// Every reported fact, at most one per op; [`compiler_note`] looks one up.
pub static COMPILER_NOTES: &[CompilerNote] = &[
    // REFERENCE.md §2: "gelu and rsqrt reported rejected (Orion #10 #17)".
    CompilerNote {
        kind: OpKind::Gelu,
        status: CompilerStatus::Rejected,
        note: "gelu is reported rejected by the ANE compiler; write it with tanh or sigmoid and elementwise ops",
        source: "Orion issues #10, #17 (reported)",
    },
    CompilerNote {
        kind: OpKind::Rsqrt,
        status: CompilerStatus::Rejected,
        note: "rsqrt is reported rejected by the ANE compiler; use pow(x, -0.5) as the maderix programs do",
        source: "Orion issues #10, #17 (reported)",
    },
    // REFERENCE.md §2: "concat rejected by one and used by maderix"; fixtures 04-08 use it.
    CompilerNote {
        kind: OpKind::Concat,
        status: CompilerStatus::Disputed,
        note: "concat is reported rejected by one project but compiles in the maderix programs",
        source: "REFERENCE.md §2 (reported); maderix/ANE generators",
    },
    // REFERENCE.md §2: "softmax on non-power-of-2 sizes reported failing".
    CompilerNote {
        kind: OpKind::Softmax,
        status: CompilerStatus::FailsOnNonPowerOfTwoAxis,
        note: "softmax is reported to fail when the softmax axis size is not a power of two",
        source: "REFERENCE.md §2 (reported)",
    },
    // REFERENCE.md §2: measured by maderix; masked scores should be -40000 in fp16.
    CompilerNote {
        kind: OpKind::ScaledDotProductAttention,
        status: CompilerStatus::IgnoresInput("attn_mask"),
        note: "scaled_dot_product_attention ignores attn_mask on the ANE; decompose it (matmul, add the mask, softmax, matmul) and use -40000 for masked scores in fp16",
        source: "maderix README (measured)",
    },
];

/// The reported fact about `kind`, if any.
pub fn compiler_note(kind: OpKind) -> Option<&'static CompilerNote> {
    COMPILER_NOTES.iter().find(|n| n.kind == kind)
}

/// The note for an op reported rejected outright; None for disputed ops (concat: rejected by
/// one report, used by working programs) and for ops that only fail under a condition or
/// compile with a quirk (see [`compiler_note`] for those).
pub fn compiler_rejected(kind: OpKind) -> Option<&'static str> {
    compiler_note(kind).filter(|n| n.status == CompilerStatus::Rejected).map(|n| n.note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_one_entry_per_op_and_cites_a_source() {
        for (i, n) in COMPILER_NOTES.iter().enumerate() {
            assert!(!n.source.is_empty() && !n.note.is_empty());
            assert!(COMPILER_NOTES[..i].iter().all(|m| m.kind != n.kind), "{:?} twice", n.kind);
        }
    }

    #[test]
    fn lookups() {
        assert!(compiler_rejected(OpKind::Gelu).is_some());
        assert!(compiler_rejected(OpKind::Rsqrt).is_some());
        assert_eq!(compiler_rejected(OpKind::Concat), None);
        assert!(compiler_note(OpKind::Concat).unwrap().note.contains("maderix"));
        assert_eq!(compiler_rejected(OpKind::Softmax), None);
        assert_eq!(
            compiler_note(OpKind::Softmax).map(|n| n.status),
            Some(CompilerStatus::FailsOnNonPowerOfTwoAxis)
        );
        assert_eq!(
            compiler_note(OpKind::ScaledDotProductAttention).map(|n| n.status),
            Some(CompilerStatus::IgnoresInput("attn_mask"))
        );
        assert_eq!(compiler_note(OpKind::Conv), None);
    }
}
