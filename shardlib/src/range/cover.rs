//! The part of [`RangeMap`](super::RangeMap) and
//! [`KeyOrderMap`](super::KeyOrderMap) that does not depend on the kind of
//! range: validation of a cover, and the split, merge and assign mutations.
//!
//! A cover of `n` ranges is stored as `n` sorted starts and `n` owners; range
//! `i` is `[starts[i], starts[i + 1])`, the last one open-ended. The first
//! start is always the origin of the space.

use std::fmt;

use super::RangeError;

/// A kind of half-open range over a totally ordered space with a least point
/// (the origin) and no greatest point (an end of `None` means "to the end").
pub(crate) trait Span: Clone + Ord + fmt::Display {
    /// A point of the space.
    type Point: Ord + Clone;

    /// The inclusive start.
    fn lower(&self) -> &Self::Point;
    /// The exclusive end; `None` is the end of the space.
    fn upper(&self) -> Option<&Self::Point>;
    /// Builds a range without checking that it is non-empty.
    fn from_bounds(start: Self::Point, end: Option<Self::Point>) -> Self;
    /// The least point of the space.
    fn origin() -> Self::Point;
    /// A point in text form, for error messages.
    fn point_text(point: &Self::Point) -> String;
}

/// A sorted, gap-free, non-overlapping cover of a whole space by ranges of
/// kind `S`, each with an owner `O`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Cover<S: Span, O> {
    /// Sorted starts; `starts[0]` is the origin.
    pub(crate) starts: Vec<S::Point>,
    /// `owners[i]` owns range `i`.
    pub(crate) owners: Vec<O>,
}

/// The most ranges a cover may hold (range indexes are `u32`).
const MAX_RANGES: usize = u32::MAX as usize;

impl<S: Span, O> Cover<S, O> {
    /// Sorts `assignments` by range and checks that they cover the space
    /// exactly once.
    pub(crate) fn new(mut assignments: Vec<(S, O)>) -> Result<Self, RangeError> {
        if assignments.len() > MAX_RANGES {
            return Err(RangeError::TooManyRanges {
                count: assignments.len() as u64,
                range: assignments[0].0.to_string(),
            });
        }
        assignments.sort_by(|a, b| a.0.cmp(&b.0));
        let Some((first, _)) = assignments.first() else {
            return Err(RangeError::Gap {
                missing: S::from_bounds(S::origin(), None).to_string(),
                after: None,
                before: None,
            });
        };
        if *first.lower() != S::origin() {
            return Err(RangeError::Gap {
                missing: S::from_bounds(S::origin(), Some(first.lower().clone())).to_string(),
                after: None,
                before: Some(first.to_string()),
            });
        }
        for pair in assignments.windows(2) {
            let (a, b) = (&pair[0].0, &pair[1].0);
            match a.upper() {
                Some(end) if end == b.lower() => {}
                Some(end) if end < b.lower() => {
                    return Err(RangeError::Gap {
                        missing: S::from_bounds(end.clone(), Some(b.lower().clone())).to_string(),
                        after: Some(a.to_string()),
                        before: Some(b.to_string()),
                    });
                }
                _ => return Err(RangeError::Overlap { first: a.to_string(), second: b.to_string() }),
            }
        }
        let last = &assignments[assignments.len() - 1].0;
        if let Some(end) = last.upper() {
            return Err(RangeError::Gap {
                missing: S::from_bounds(end.clone(), None).to_string(),
                after: Some(last.to_string()),
                before: None,
            });
        }
        let (ranges, owners): (Vec<S>, Vec<O>) = assignments.into_iter().unzip();
        let starts = ranges.into_iter().map(|r| r.lower().clone()).collect();
        Ok(Cover { starts, owners })
    }

    /// The number of ranges (at least one).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Range `i`.
    #[inline]
    pub(crate) fn range(&self, i: usize) -> S {
        S::from_bounds(self.starts[i].clone(), self.starts.get(i + 1).cloned())
    }

    /// The index of the range equal to `range`, if the map has it.
    pub(crate) fn position(&self, range: &S) -> Option<usize> {
        let i = self.starts.binary_search(range.lower()).ok()?;
        (self.starts.get(i + 1) == range.upper()).then_some(i)
    }

    /// Like [`Cover::position`], with an error naming the missing range.
    fn require(&self, range: &S) -> Result<usize, RangeError> {
        self.position(range).ok_or_else(|| RangeError::UnknownRange { range: range.to_string() })
    }

    /// The owner of exactly `range`, if the map has it.
    pub(crate) fn find(&self, range: &S) -> Option<&O> {
        self.position(range).map(|i| &self.owners[i])
    }

    /// Iterates over the ranges in order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (S, &O)> + ExactSizeIterator + '_ {
        (0..self.len()).map(|i| (self.range(i), &self.owners[i]))
    }

    /// Splits `range` at `at`; the left part keeps its owner, the right part
    /// goes to `right_owner`.
    pub(crate) fn split(&mut self, range: &S, at: S::Point, right_owner: O) -> Result<(), RangeError> {
        let i = self.require(range)?;
        let inside = *range.lower() < at && range.upper().is_none_or(|end| at < *end);
        if !inside {
            return Err(RangeError::SplitPointOutside { range: range.to_string(), point: S::point_text(&at) });
        }
        if self.len() >= MAX_RANGES {
            return Err(RangeError::TooManyRanges { count: self.len() as u64 + 1, range: range.to_string() });
        }
        self.starts.insert(i + 1, at);
        self.owners.insert(i + 1, right_owner);
        Ok(())
    }

    /// Joins `left` and the range right after it, `right`, which must have
    /// equal owners.
    pub(crate) fn merge(&mut self, left: &S, right: &S) -> Result<(), RangeError>
    where
        O: PartialEq,
    {
        let i = self.require(left)?;
        let j = self.require(right)?;
        if j != i + 1 {
            return Err(RangeError::NotAdjacent { left: left.to_string(), right: right.to_string() });
        }
        if self.owners[i] != self.owners[j] {
            return Err(RangeError::OwnerMismatch { left: left.to_string(), right: right.to_string() });
        }
        self.starts.remove(j);
        self.owners.remove(j);
        Ok(())
    }

    /// Gives `range` to `owner`; returns the previous owner.
    pub(crate) fn assign(&mut self, range: &S, owner: O) -> Result<O, RangeError> {
        let i = self.require(range)?;
        Ok(std::mem::replace(&mut self.owners[i], owner))
    }

    /// The same cover with owners mapped by `f`.
    pub(crate) fn map_owners<P>(&self, f: impl FnMut(&O) -> P) -> Cover<S, P> {
        Cover { starts: self.starts.clone(), owners: self.owners.iter().map(f).collect() }
    }

    /// Formats the cover as a map from range to owner.
    pub(crate) fn fmt_debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        O: fmt::Debug,
    {
        struct Shown<S>(S);
        impl<S: fmt::Display> fmt::Debug for Shown<S> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        f.debug_map().entries(self.iter().map(|(r, o)| (Shown(r), o))).finish()
    }
}
