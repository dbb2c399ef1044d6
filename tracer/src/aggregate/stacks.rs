//! The distinct kernel stacks of a run: each raw stack gets an id the first
//! time it is seen, together with its attribution (symbols, context, path),
//! worked out then and only then. Later records with the same stack cost one
//! hash of its frames and one comparison.

use std::collections::HashMap;

use hashbrown::HashTable;

use super::hash::hash_words;
use crate::{classify::Context, verdict::Plan};

/// What one distinct stack says, worked out once.
#[derive(Debug, Clone)]
pub struct StackInfo {
    pub context: Context,
    pub path: String,
    /// Root first, `;`-joined.
    pub folded: String,
    /// The outcome rules that can decide this stack's failures.
    pub plan: Plan,
    /// The stack runs through a lock-free allocation try.
    pub nolock: bool,
    /// Id of this stack's (context, path), the parts of it rows are grouped by.
    pub(super) class: u32,
}

/// The (context, path) of a stack as far as rows are grouped by them.
pub(super) type ClassKey = (Option<Context>, Option<String>);

/// Stack ids by raw frames, and what each stack says.
#[derive(Debug, Default)]
pub(super) struct Stacks {
    /// `(hash of the frames, id, class)`: the hash is kept, so growing the
    /// table never hashes frames again; the class, so a record's lookup
    /// needs nothing else.
    ids: HashTable<(u64, u32, u32)>,
    /// Raw frames by id.
    frames: Vec<Box<[u64]>>,
    /// Attribution by id.
    info: Vec<StackInfo>,
    /// Interned [`ClassKey`]s.
    classes: HashMap<ClassKey, u32>,
}

/// A known stack: its id and class.
#[derive(Debug, Clone, Copy)]
pub(super) struct Known {
    pub id: u32,
    pub class: u32,
}

impl Stacks {
    /// Look a stack up by its frames: known, or the hash
    /// [`Stacks::insert`] needs.
    #[inline]
    pub fn find(&self, raw: &[u64]) -> Result<Known, u64> {
        let hash = hash_words(raw);
        self.ids
            .find(hash, |&(h, id, _)| {
                h == hash && *self.frames[id as usize] == *raw
            })
            .map(|&(_, id, class)| Known { id, class })
            .ok_or(hash)
    }

    /// Add a stack [`Stacks::find`] did not know.
    pub fn insert(&mut self, hash: u64, raw: &[u64], info: StackInfo) -> Known {
        let known = Known {
            id: u32::try_from(self.info.len()).unwrap_or(u32::MAX),
            class: info.class,
        };
        self.frames.push(raw.into());
        self.info.push(info);
        self.ids
            .insert_unique(hash, (hash, known.id, known.class), |&(h, ..)| h);
        known
    }

    /// The id of a class, interned.
    pub fn class(&mut self, key: ClassKey) -> u32 {
        let next = u32::try_from(self.classes.len()).unwrap_or(u32::MAX - 1);
        *self.classes.entry(key).or_insert(next)
    }

    /// The attribution of a stack id.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&StackInfo> {
        self.info.get(id as usize)
    }

    /// The raw frames of a stack id.
    pub fn raw(&self, id: u32) -> Option<&[u64]> {
        self.frames.get(id as usize).map(|f| &**f)
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.info.len()
    }

    /// Forget every stack and class.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.frames.clear();
        self.info.clear();
        self.classes.clear();
    }
}
