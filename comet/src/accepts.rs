//! The ops a session accepts for key, mid and broadcast pushes: a sorted set that keeps the
//! usual few inline, so a session allocates nothing for it.

const INLINE: usize = 3;

/// 16 bytes: the tag and `len` share the array's first alignment unit, and the heap form
/// is a thin pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accepts {
    Inline {
        len: u8,
        ops: [i32; INLINE],
    },
    #[allow(clippy::box_collection)] // a thin pointer keeps the enum at 16 bytes
    Heap(Box<Vec<i32>>),
}

impl Accepts {
    pub fn new(ops: impl IntoIterator<Item = i32>) -> Self {
        let mut v: Vec<i32> = ops.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self::from_sorted(v)
    }

    fn from_sorted(v: Vec<i32>) -> Self {
        if v.len() <= INLINE {
            let mut ops = [0; INLINE];
            ops[..v.len()].copy_from_slice(&v);
            Accepts::Inline {
                len: v.len() as u8,
                ops,
            }
        } else {
            Accepts::Heap(Box::new(v))
        }
    }

    pub fn as_slice(&self) -> &[i32] {
        match self {
            Accepts::Inline { len, ops } => &ops[..*len as usize],
            Accepts::Heap(v) => v,
        }
    }

    pub fn contains(&self, op: i32) -> bool {
        self.as_slice().binary_search(&op).is_ok()
    }

    /// goim op 14: accept these too.
    pub fn add(&mut self, ops: &[i32]) {
        *self = Self::new(self.as_slice().iter().chain(ops).copied());
    }

    /// goim op 16: accept these no more.
    pub fn remove(&mut self, ops: &[i32]) {
        let kept = self.as_slice().iter().copied().filter(|o| !ops.contains(o));
        *self = Self::from_sorted(kept.collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sorted_set_inline_up_to_three() {
        assert_eq!(std::mem::size_of::<Accepts>(), 16);
        let mut a = Accepts::new([1002, 1000, 1000]);
        assert!(matches!(a, Accepts::Inline { len: 2, .. }));
        assert_eq!(a.as_slice(), &[1000, 1002]);
        a.add(&[7, 1001]);
        assert!(matches!(a, Accepts::Heap(_)));
        assert_eq!(a.as_slice(), &[7, 1000, 1001, 1002]);
        assert!(a.contains(1001) && !a.contains(5));
        a.remove(&[7, 1002, 9]);
        assert_eq!(a, Accepts::new([1001, 1000]));
        a.remove(&[1000, 1001]);
        assert!(a.as_slice().is_empty() && !a.contains(0));
    }
}
