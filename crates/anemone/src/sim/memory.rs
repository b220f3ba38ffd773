//! Activation memory planning: assigns every intermediate tensor a buffer so that tensors
//! whose live ranges do not overlap share memory. Peak activation memory is then the sum of
//! the buffers, well below the sum of all intermediates for any deep program.

/// One tensor to place: its size and the steps between which it must stay intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Size of the tensor in bytes.
    pub bytes: usize,
    /// The step that writes it.
    pub first: usize,
    /// The last step that reads it (== `first` if nothing reads it).
    pub last: usize,
}

/// Where each tensor lives, and the buffers to allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Buffer index of each tensor, in the order given.
    pub assignment: Vec<usize>,
    /// Size in bytes of each buffer.
    pub buffer_sizes: Vec<usize>,
}

impl MemoryPlan {
    /// Bytes of all buffers together: the peak activation memory.
    pub fn peak_bytes(&self) -> usize {
        self.buffer_sizes.iter().sum()
    }
}

/// Greedy interval allocation: tensors in order of their first step take the smallest free
/// buffer that is large enough (growing the largest free one if none is), and free it after
/// their last step. A buffer is never shared by two tensors that are live at the same step,
/// so an op's output never aliases one of its inputs.
pub fn plan(lifetimes: &[Lifetime]) -> MemoryPlan {
    let mut order: Vec<usize> = (0..lifetimes.len()).collect();
    order.sort_by_key(|&i| (lifetimes[i].first, std::cmp::Reverse(lifetimes[i].bytes)));

    let mut buffer_sizes: Vec<usize> = Vec::new();
    // Buffer index -> last step of the tensor that holds it.
    let mut busy_until: Vec<Option<usize>> = Vec::new();
    let mut assignment = vec![usize::MAX; lifetimes.len()];

    for i in order {
        let t = lifetimes[i];
        let free = |b: usize| busy_until[b].is_none_or(|last| last < t.first);
        let best_fit = (0..buffer_sizes.len())
            .filter(|&b| free(b) && buffer_sizes[b] >= t.bytes)
            .min_by_key(|&b| buffer_sizes[b]);
        let chosen = best_fit.or_else(|| {
            (0..buffer_sizes.len()).filter(|&b| free(b)).max_by_key(|&b| buffer_sizes[b])
        });
        let b = match chosen {
            Some(b) => {
                buffer_sizes[b] = buffer_sizes[b].max(t.bytes);
                b
            }
            None => {
                buffer_sizes.push(t.bytes);
                busy_until.push(None);
                buffer_sizes.len() - 1
            }
        };
        busy_until[b] = Some(t.last.max(t.first));
        assignment[i] = b;
    }
    MemoryPlan { assignment, buffer_sizes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(bytes: usize, first: usize, last: usize) -> Lifetime {
        Lifetime { bytes, first, last }
    }

    /// No two tensors that are live at the same step share a buffer, and each buffer is
    /// large enough for every tensor placed in it.
    fn assert_sound(lts: &[Lifetime], p: &MemoryPlan) {
        for (i, a) in lts.iter().enumerate() {
            assert!(p.buffer_sizes[p.assignment[i]] >= a.bytes);
            for (j, b) in lts.iter().enumerate().skip(i + 1) {
                let overlap = a.first <= b.last.max(b.first) && b.first <= a.last.max(a.first);
                if overlap {
                    assert_ne!(p.assignment[i], p.assignment[j], "{a:?} and {b:?} overlap");
                }
            }
        }
    }

    #[test]
    fn a_chain_needs_two_buffers() {
        // x0 -> x1 -> x2 -> x3: each op reads the previous tensor and writes the next.
        let lts: Vec<_> = (0..8).map(|i| lt(100, i, i + 1)).collect();
        let p = plan(&lts);
        assert_sound(&lts, &p);
        assert_eq!(p.buffer_sizes.len(), 2);
        assert_eq!(p.peak_bytes(), 200);
    }

    #[test]
    fn long_lived_tensors_keep_their_buffer() {
        let lts = vec![lt(10, 0, 5), lt(20, 1, 2), lt(30, 2, 3), lt(5, 3, 5), lt(40, 4, 5)];
        let p = plan(&lts);
        assert_sound(&lts, &p);
        assert!(p.peak_bytes() < lts.iter().map(|l| l.bytes).sum::<usize>());
    }

    #[test]
    fn random_lifetimes_are_placed_soundly() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let n = (next() % 30) as usize + 1;
            let lts: Vec<_> = (0..n)
                .map(|i| lt((next() % 1000) as usize + 1, i, i + (next() % 6) as usize))
                .collect();
            assert_sound(&lts, &plan(&lts));
        }
    }
}
