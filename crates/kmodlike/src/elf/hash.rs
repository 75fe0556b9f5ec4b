//! The symbol hash table, as `ld.so` sets it up in `_dl_setup_hash` and walks it in
//! `do_lookup_x`: a GNU table (`DT_GNU_HASH`) whose bloom filter, buckets and chains lie in
//! the segment that holds it, whose buckets start at hashed symbols and whose last chain ends;
//! or a SysV table (`DT_HASH`) whose buckets and chains fit and lead to symbols below `nchain`
//! without looping. `ld.so` trusts both, and the symbol count comes from them: there is no
//! other.

use super::bytes::u32_at;
use super::dynamic::Dynamic;
use super::phdrs::Segments;

/// The file's symbol lookup table, as `ld.so` sets it up in `_dl_setup_hash`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hash {
    /// `DT_GNU_HASH`.
    Gnu { vaddr: u64, nbuckets: u32, symoffset: u32, bloom_size: u32, bloom_shift: u32 },
    /// `DT_HASH` (used only when there is no `DT_GNU_HASH`).
    Sysv { vaddr: u64, nbucket: u32, nchain: u32 },
}

/// Byte offsets, from the start of a GNU hash table, of its bucket array and of its chains.
pub(crate) fn gnu_layout(bloom_size: u32, nbuckets: u32) -> (u64, u64) {
    let buckets_at = 16 + u64::from(bloom_size) * 8;
    let chains_at = buckets_at + u64::from(nbuckets) * 4;
    (buckets_at, chains_at)
}

/// The hash table `ld.so` will look symbols up in (`DT_GNU_HASH`, else `DT_HASH`), checked the
/// way its lookups walk it, and the number of dynamic symbols it implies.
pub(crate) fn parse(seg: &Segments<'_>, d: &Dynamic) -> Result<(Hash, u64), String> {
    if let Some(vaddr) = d.gnu_hash {
        let head = seg.table("the GNU hash table (DT_GNU_HASH)", vaddr, 16)?;
        let word = |i: u64| u32_at(head, i * 4).unwrap_or(0);
        let (nbuckets, symoffset, bloom_size, bloom_shift) = (word(0), word(1), word(2), word(3));
        if !bloom_size.is_power_of_two() {
            return Err(format!(
                "GNU hash table: bloom filter size {bloom_size} is not a power of two"
            ));
        }
        if bloom_shift >= 64 {
            return Err(format!("GNU hash table: bloom shift {bloom_shift} is not below 64"));
        }
        let (buckets_at, chains_at) = gnu_layout(bloom_size, nbuckets);
        let rest = seg.mapped_rest(vaddr).unwrap_or(&[]);
        if (rest.len() as u64) < chains_at {
            return Err(format!(
                "GNU hash table at {vaddr:#x}: {bloom_size} bloom words and {nbuckets} buckets \
                     run past the end of the segment that holds it"
            ));
        }
        let chains = &rest[chains_at as usize..];
        let nchains = chains.len() as u64 / 4;
        // Chains are consecutive runs ending at a word with the low bit set, so every
        // chain ends at or before the end of the one that starts last: walking that one
        // proves them all (and is how many symbols there are).
        let mut last_start = 0u64;
        for b in 0..u64::from(nbuckets) {
            let start = u64::from(u32_at(rest, buckets_at + b * 4).unwrap_or(0));
            if start != 0 && start < u64::from(symoffset) {
                return Err(format!(
                    "GNU hash table: bucket {b} starts at symbol {start}, below the first \
                         hashed symbol {symoffset}"
                ));
            }
            last_start = last_start.max(start);
        }
        let mut nsyms = u64::from(symoffset);
        if last_start != 0 {
            let mut i = last_start - u64::from(symoffset);
            loop {
                let Some(h) = u32_at(chains, i * 4) else {
                    return Err(format!(
                        "GNU hash table: the chain from symbol {last_start} does not end \
                             within the segment ({nchains} chain words fit)"
                    ));
                };
                if h & 1 == 1 {
                    break;
                }
                i += 1;
            }
            nsyms = i + u64::from(symoffset) + 1;
        }
        Ok((Hash::Gnu { vaddr, nbuckets, symoffset, bloom_size, bloom_shift }, nsyms))
    } else if let Some(vaddr) = d.hash {
        let head = seg.table("the hash table (DT_HASH)", vaddr, 8)?;
        let nbucket = u32_at(head, 0).unwrap_or(0);
        let nchain = u32_at(head, 4).unwrap_or(0);
        let size = 8 + (u64::from(nbucket) + u64::from(nchain)) * 4;
        let table = seg.table("the hash table (DT_HASH)", vaddr, size).map_err(|_| {
            format!(
                "hash table (DT_HASH) at {vaddr:#x}: {nbucket} buckets and {nchain} chain \
                     entries run past the end of the segment that holds it"
            )
        })?;
        let entry = |i: u64| u64::from(u32_at(table, 8 + i * 4).unwrap_or(0));
        let mut steps = 0u64;
        for b in 0..u64::from(nbucket) {
            let mut s = entry(b);
            while s != 0 {
                if s >= u64::from(nchain) {
                    return Err(format!(
                        "hash table (DT_HASH): bucket {b} leads to symbol {s}, not below \
                             nchain {nchain}"
                    ));
                }
                steps += 1;
                if steps > u64::from(nchain) {
                    return Err(format!("hash table (DT_HASH): the chain of bucket {b} loops"));
                }
                s = entry(u64::from(nbucket) + s);
            }
        }
        Ok((Hash::Sysv { vaddr, nbucket, nchain }, u64::from(nchain)))
    } else {
        Err("the dynamic section has a symbol table but no hash table (neither \
                        DT_GNU_HASH nor DT_HASH)"
            .into())
    }
}
