//! The symbol version tables `ld.so` reads while checking versions and binding
//! (`_dl_check_map_versions`, `elf/dl-version.c`): `DT_VERNEED` and `DT_VERDEF` chains whose
//! records lie in the file, agree with their counts and name strings inside the string table,
//! each needed version's file one of the object's libraries (`find_needed` asserts it), and
//! every `DT_VERSYM` index at most the highest index defined or needed (`ld.so` indexes its
//! version array with it unchecked).

use object::elf::*;

use super::bytes::{u16_at, u32_at};
use super::image::Image;

/// Whether `name` is a library `ld.so` will have in this object's search list for a
/// `DT_VERNEED` record (`find_needed` asserts that it finds one).
fn known_library(img: &Image<'_>, name: &[u8]) -> bool {
    img.needed().any(|n| n == name)
        || img.dyn_entries().any(|(t, v)| t == DT_SONAME && img.str_at(v) == name)
        || matches!(name, b"ld-linux-x86-64.so.2" | b"ld-linux-aarch64.so.1")
}

/// Most records a version chain may have when its count tag is missing.
const MAX_VERSIONS: u64 = 4096;

pub(super) fn versions(img: &Image<'_>) -> Result<(), String> {
    let d = &img.dynamic;
    let strsz = img.strtab.len() as u64;
    let mut ndx_high = 0u16;
    let name_ok = |what: &str, off: u32| -> Result<(), String> {
        if u64::from(off) < strsz {
            Ok(())
        } else {
            Err(format!(
                "{what}: name offset {off:#x} is not inside the string table (DT_STRSZ {strsz:#x})"
            ))
        }
    };
    if let Some(start) = d.verneed {
        let count = d.verneednum.unwrap_or(MAX_VERSIONS);
        let (mut ent, mut n) = (start, 0u64);
        loop {
            n += 1;
            if n > count {
                return Err(format!(
                    "version needs (DT_VERNEED {start:#x}): the chain has more than \
                     DT_VERNEEDNUM ({count}) records"
                ));
            }
            let what = format!("version need record {n} at {ent:#x}");
            let rec = img.segments.table(&format!("version need record {n}"), ent, 16)?;
            let (ver, cnt, file, aux_off, next) = (
                u16_at(rec, 0).unwrap_or(0),
                u16_at(rec, 2).unwrap_or(0),
                u32_at(rec, 4).unwrap_or(0),
                u32_at(rec, 8).unwrap_or(0),
                u32_at(rec, 12).unwrap_or(0),
            );
            if ver != 1 {
                return Err(format!("{what}: vn_version is {ver}, not 1"));
            }
            name_ok(&what, file)?;
            let lib = img.str_at(u64::from(file));
            if !known_library(img, lib) {
                return Err(format!(
                    "{what}: vn_file {:?} is not one of the DT_NEEDED libraries (ld.so asserts \
                     that it is)",
                    String::from_utf8_lossy(lib)
                ));
            }
            let mut aux = ent.checked_add(u64::from(aux_off)).ok_or("vn_aux overflows")?;
            let mut naux = 0u64;
            loop {
                naux += 1;
                if naux > u64::from(cnt) {
                    return Err(format!("{what}: more auxiliary records than vn_cnt ({cnt})"));
                }
                let awhat = format!("{what}, auxiliary record {naux}");
                let a = img.segments.table(&awhat, aux, 16)?;
                name_ok(&awhat, u32_at(a, 8).unwrap_or(0))?;
                ndx_high = ndx_high.max(u16_at(a, 6).unwrap_or(0) & 0x7fff);
                let anext = u32_at(a, 12).unwrap_or(0);
                if anext == 0 {
                    break;
                }
                aux = aux.checked_add(u64::from(anext)).ok_or("vna_next overflows")?;
            }
            if naux != u64::from(cnt) {
                return Err(format!("{what}: vn_cnt is {cnt} but the chain has {naux} records"));
            }
            if next == 0 {
                break;
            }
            ent = ent.checked_add(u64::from(next)).ok_or("vn_next overflows")?;
        }
        if let Some(c) = d.verneednum.filter(|&c| c != n) {
            return Err(format!(
                "version needs (DT_VERNEED {start:#x}): DT_VERNEEDNUM is {c} but the chain has \
                 {n} records"
            ));
        }
    }
    if let Some(start) = d.verdef {
        let count = d.verdefnum.unwrap_or(MAX_VERSIONS);
        let (mut ent, mut n) = (start, 0u64);
        loop {
            n += 1;
            if n > count {
                return Err(format!(
                    "version definitions (DT_VERDEF {start:#x}): the chain has more than \
                     DT_VERDEFNUM ({count}) records"
                ));
            }
            let what = format!("version definition record {n} at {ent:#x}");
            let rec = img.segments.table(&format!("version definition record {n}"), ent, 20)?;
            let (ver, ndx, cnt, aux_off, next) = (
                u16_at(rec, 0).unwrap_or(0),
                u16_at(rec, 4).unwrap_or(0),
                u16_at(rec, 6).unwrap_or(0),
                u32_at(rec, 12).unwrap_or(0),
                u32_at(rec, 16).unwrap_or(0),
            );
            if ver != 1 {
                return Err(format!("{what}: vd_version is {ver}, not 1"));
            }
            if cnt == 0 {
                return Err(format!("{what}: vd_cnt is 0 (ld.so reads its first name)"));
            }
            ndx_high = ndx_high.max(ndx & 0x7fff);
            let mut aux = ent.checked_add(u64::from(aux_off)).ok_or("vd_aux overflows")?;
            for k in 1..=u64::from(cnt) {
                let awhat = format!("{what}, name record {k}");
                let a = img.segments.table(&awhat, aux, 8)?;
                name_ok(&awhat, u32_at(a, 0).unwrap_or(0))?;
                let anext = u32_at(a, 4).unwrap_or(0);
                if k < u64::from(cnt) {
                    if anext == 0 {
                        return Err(format!("{what}: vd_cnt is {cnt} but the chain has {k} names"));
                    }
                    aux = aux.checked_add(u64::from(anext)).ok_or("vda_next overflows")?;
                }
            }
            if next == 0 {
                break;
            }
            ent = ent.checked_add(u64::from(next)).ok_or("vd_next overflows")?;
        }
        if let Some(c) = d.verdefnum.filter(|&c| c != n) {
            return Err(format!(
                "version definitions (DT_VERDEF {start:#x}): DT_VERDEFNUM is {c} but the chain \
                 has {n} records"
            ));
        }
    }
    if d.versym.is_some() {
        for i in 0..img.nsyms {
            let v = img.versym(i).unwrap_or(0) & 0x7fff;
            if v > ndx_high {
                return Err(format!(
                    "dynamic symbol {i}: version index {v} (DT_VERSYM) is above the highest \
                     defined or needed version index {ndx_high} (ld.so indexes its version \
                     array with it unchecked)"
                ));
            }
        }
    }
    Ok(())
}
