//! Indexing and shape-building ops: gather, gather_along_axis, expand_dims, squeeze, stack, tile, pad, band_part.

use crate::ir::Type;

use super::signature::{NAME_ONLY, Signature};
use super::{OpContext, OpError, OpKind};

static PENDING: Signature = Signature { inputs: &[], attributes: NAME_ONLY };

/// The signature of each op of this family.
pub(super) fn signature(_kind: OpKind) -> &'static Signature {
    &PENDING
}

/// Checks one op of this family and infers its result types.
pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    Err(ctx.error("not supported yet"))
}
