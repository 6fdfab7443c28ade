//! Just enough ELF to know what the dynamic loader will load: the identity fields ld.so
//! checks (class, byte order, machine, OS ABI, type), `PT_INTERP`, and the dynamic section's
//! `DT_NEEDED`, `DT_RPATH`, `DT_RUNPATH`, `DT_SONAME`, `DT_FLAGS_1` and filters.
//!
//! Why not `goblin::elf::Elf::parse`: it wants the whole file in memory, and images hold
//! hundreds of megabytes of shared objects. Here the header and program headers come from
//! one small read at the start, then the dynamic section and the few strings it names are
//! read at their offsets, so a blob-backed [`RootFs`](crate::RootFs) serves a library with
//! three small reads. goblin still parses the headers; every size and offset is checked
//! against the file size and sane limits first, so a hostile or truncated file costs
//! bounded memory and ends as an [`ElfError`], never a panic.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD};
use goblin::elf::{Elf, ProgramHeader};
use serde::Serialize;

use crate::error::ElfError;
use crate::rootfs::{read_exact_or_eof, ReadAt};

/// How many bytes the first read takes: the ELF header, and in practice the program headers.
pub const HEAD_LEN: usize = 4096;
/// Program header tables larger than this are rejected (the kernel refuses them too).
const MAX_PHDR_TABLE: u64 = 64 * 1024;
/// Dynamic sections larger than this are rejected (real ones hold a few dozen entries).
const MAX_DYNAMIC: u64 = 1024 * 1024;
/// Longest string read from the dynamic string table (PATH_MAX).
const MAX_STRING: usize = 4096;
/// Longest `PT_INTERP`.
const MAX_INTERP: u64 = 4096;
/// Most strings gathered in one read of the string table; beyond that, one read per string.
const MAX_STR_SPAN: u64 = 1024 * 1024;

const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DT_AUXILIARY: u64 = 0x7fff_fffd;
const DT_FILTER: u64 = 0x7fff_ffff;

/// `DF_1_NODEFLIB`: do not search the default directories (nor cache entries in them).
pub const DF_1_NODEFLIB: u64 = 0x800;
/// `DF_1_PIE`: a position-independent executable, which ld.so refuses to load as a library.
pub const DF_1_PIE: u64 = 0x0800_0000;

/// `e_type` of an executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a shared object (or PIE).
pub const ET_DYN: u16 = 3;

/// ELF class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ElfClass {
    /// ELFCLASS32.
    Elf32,
    /// ELFCLASS64.
    Elf64,
}

/// How a dependency entry of the dynamic section asks for an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DepKind {
    /// `DT_NEEDED`.
    Needed,
    /// `DT_AUXILIARY`: loaded if present, a failure is ignored.
    Auxiliary,
    /// `DT_FILTER`: loaded, a failure is fatal.
    Filter,
}

/// What the loader needs to know about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// 32 or 64 bit.
    pub class: ElfClass,
    /// Byte order.
    pub little_endian: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `e_ident[EI_OSABI]`.
    pub osabi: u8,
    /// `e_ident[EI_ABIVERSION]`.
    pub abiversion: u8,
    /// `e_type`.
    pub e_type: u16,
    /// `PT_INTERP`, without the trailing NUL.
    pub interp: Option<String>,
    /// Whether the file has a `PT_DYNAMIC` segment.
    pub has_dynamic: bool,
    /// `DT_NEEDED`, `DT_AUXILIARY` and `DT_FILTER` entries, in dynamic-section order (the
    /// order ld.so loads them in).
    pub deps: Vec<(DepKind, String)>,
    /// `DT_RPATH`, dropped when `DT_RUNPATH` is present (as ld.so drops it).
    pub rpath: Option<String>,
    /// `DT_RUNPATH`.
    pub runpath: Option<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_FLAGS_1`.
    pub flags_1: u64,
}

impl ElfInfo {
    /// The `DT_NEEDED` names only.
    pub fn needed(&self) -> impl Iterator<Item = &str> {
        self.deps
            .iter()
            .filter(|(k, _)| *k == DepKind::Needed)
            .map(|(_, n)| n.as_str())
    }
}

/// Class and machine from the identification and header bytes, without parsing further:
/// ld.so skips a file of the wrong class or machine before it looks at anything else, so a
/// file whose later structures are garbage must still be recognised as "other class".
pub fn ident(head: &[u8]) -> Option<(ElfClass, u16)> {
    if !is_elf(head) || head.len() < 20 {
        return None;
    }
    let class = match head[4] {
        1 => ElfClass::Elf32,
        2 => ElfClass::Elf64,
        _ => return None,
    };
    let m = [head[18], head[19]];
    let machine = match head[5] {
        1 => u16::from_le_bytes(m),
        2 => u16::from_be_bytes(m),
        _ => return None,
    };
    Some((class, machine))
}

/// True when `[offset, offset + len)` does not fit in a file of `size` bytes.
fn past_end(offset: u64, len: u64, size: u64) -> bool {
    offset.checked_add(len).is_none_or(|end| end > size)
}

/// True if the bytes start with the ELF magic.
pub fn is_elf(head: &[u8]) -> bool {
    head.len() >= 4 && &head[..4] == b"\x7fELF"
}

/// Parses an ELF file. `head` is the start of the file (at least its first [`HEAD_LEN`]
/// bytes when the file is that long); further reads go through `file`.
pub fn parse(path: &str, file: &dyn ReadAt, head: &[u8]) -> Result<ElfInfo, ElfError> {
    let size = file.size();
    let truncated = |what: &str| ElfError::Truncated {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    let malformed = |what: String| ElfError::Malformed {
        path: path.to_owned(),
        what,
    };
    let absurd = |field, value| ElfError::Absurd {
        path: path.to_owned(),
        field,
        value,
    };
    if head.len() < 16 {
        return Err(truncated("ELF identification (16 bytes)"));
    }
    let (class, container, ehsize, phentsize) = match head[4] {
        1 => (ElfClass::Elf32, Container::Little, 52usize, 32u64),
        2 => (ElfClass::Elf64, Container::Big, 64usize, 56u64),
        c => return Err(malformed(format!("EI_CLASS {c}"))),
    };
    let endian = match head[5] {
        1 => Endian::Little,
        2 => Endian::Big,
        d => return Err(malformed(format!("EI_DATA {d}"))),
    };
    if head.len() < ehsize {
        return Err(truncated("ELF header"));
    }
    let header = Elf::parse_header(&head[..ehsize]).map_err(|e| malformed(e.to_string()))?;
    let ctx = Ctx::new(container, endian);
    let mut info = ElfInfo {
        class,
        little_endian: endian == Endian::Little,
        machine: header.e_machine,
        osabi: head[7],
        abiversion: head[8],
        e_type: header.e_type,
        interp: None,
        has_dynamic: false,
        deps: Vec::new(),
        rpath: None,
        runpath: None,
        soname: None,
        flags_1: 0,
    };

    let phnum = u64::from(header.e_phnum);
    if phnum == 0 {
        return Ok(info);
    }
    if phnum == 0xffff {
        // PN_XNUM: the real count lives in section header 0. No loader-relevant file uses it.
        return Err(absurd("e_phnum", phnum));
    }
    if u64::from(header.e_phentsize) != phentsize {
        return Err(absurd("e_phentsize", header.e_phentsize.into()));
    }
    let table = phnum * phentsize;
    if table > MAX_PHDR_TABLE {
        return Err(absurd("e_phnum", phnum));
    }
    let phoff = header.e_phoff;
    if past_end(phoff, table, size) {
        return Err(truncated("program header table"));
    }
    let owned;
    let phbytes: &[u8] = match usize::try_from(phoff + table) {
        Ok(end) if end <= head.len() => &head[phoff as usize..end],
        _ => {
            owned = read_exact_or_eof(file, phoff, table as usize)?;
            if owned.len() as u64 != table {
                return Err(truncated("program header table"));
            }
            &owned
        }
    };
    let phdrs = ProgramHeader::parse(phbytes, 0, phnum as usize, ctx)
        .map_err(|e| malformed(format!("program headers: {e}")))?;

    if let Some(ph) = phdrs.iter().find(|p| p.p_type == PT_INTERP) {
        if ph.p_filesz > MAX_INTERP {
            return Err(absurd("PT_INTERP p_filesz", ph.p_filesz));
        }
        if past_end(ph.p_offset, ph.p_filesz, size) {
            return Err(truncated("PT_INTERP"));
        }
        let bytes = read_exact_or_eof(file, ph.p_offset, ph.p_filesz as usize)?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let s = std::str::from_utf8(&bytes[..end])
            .map_err(|_| malformed("PT_INTERP is not UTF-8".into()))?;
        if s.is_empty() {
            return Err(malformed("empty PT_INTERP".into()));
        }
        info.interp = Some(s.to_owned());
    }

    let Some(dynph) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return Ok(info);
    };
    info.has_dynamic = true;
    if dynph.p_filesz > MAX_DYNAMIC {
        return Err(absurd("PT_DYNAMIC p_filesz", dynph.p_filesz));
    }
    if past_end(dynph.p_offset, dynph.p_filesz, size) {
        return Err(truncated("dynamic section"));
    }
    let dynbytes = read_exact_or_eof(file, dynph.p_offset, dynph.p_filesz as usize)?;
    let word = if class == ElfClass::Elf64 { 8 } else { 4 };
    let read_word = |b: &[u8]| -> u64 {
        match (word, endian == Endian::Little) {
            (8, true) => u64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
            (8, false) => u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            (_, true) => u64::from(u32::from_le_bytes(b[..4].try_into().unwrap_or_default())),
            (_, false) => u64::from(u32::from_be_bytes(b[..4].try_into().unwrap_or_default())),
        }
    };

    let mut strtab = None;
    let mut strsz = None;
    let mut deps: Vec<(DepKind, u64)> = Vec::new();
    let (mut rpath, mut runpath, mut soname) = (None, None, None);
    for entry in dynbytes.chunks_exact(2 * word) {
        let tag = read_word(&entry[..word]);
        let val = read_word(&entry[word..]);
        match tag {
            DT_NULL => break,
            DT_NEEDED => deps.push((DepKind::Needed, val)),
            DT_AUXILIARY => deps.push((DepKind::Auxiliary, val)),
            DT_FILTER => deps.push((DepKind::Filter, val)),
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_SONAME => soname = Some(val),
            DT_RPATH => rpath = Some(val),
            DT_RUNPATH => runpath = Some(val),
            DT_FLAGS_1 => info.flags_1 = val,
            _ => {}
        }
    }
    // glibc's get_dynamic_info: "If both RUNPATH and RPATH are given, the latter is ignored."
    if runpath.is_some() {
        rpath = None;
    }
    let wanted: Vec<u64> = deps
        .iter()
        .map(|(_, o)| *o)
        .chain(rpath)
        .chain(runpath)
        .chain(soname)
        .collect();
    if wanted.is_empty() {
        return Ok(info);
    }
    let Some(strtab) = strtab else {
        return Err(malformed("DT_NEEDED/DT_SONAME without DT_STRTAB".into()));
    };
    // DT_STRTAB is a virtual address: map it to a file offset through PT_LOAD.
    let Some(load) = phdrs
        .iter()
        .find(|p| p.p_type == PT_LOAD && p.p_vaddr <= strtab && strtab - p.p_vaddr < p.p_filesz)
    else {
        return Err(malformed(format!(
            "DT_STRTAB 0x{strtab:x} is not inside any PT_LOAD segment"
        )));
    };
    let str_off = strtab - load.p_vaddr + load.p_offset;
    if str_off >= size {
        return Err(truncated("dynamic string table"));
    }
    let limit = strsz.unwrap_or(size - str_off).min(size - str_off);
    if let Some(bad) = wanted.iter().find(|&&o| o >= limit) {
        if strsz.is_some_and(|s| s > size - str_off) {
            return Err(truncated("dynamic string table"));
        }
        return Err(absurd("dynamic string offset", *bad));
    }
    let lo = wanted.iter().copied().min().unwrap_or(0);
    let hi = wanted.iter().copied().max().unwrap_or(0);
    let span_end = (hi + MAX_STRING as u64).min(limit);
    let span = if span_end - lo <= MAX_STR_SPAN {
        Some(read_exact_or_eof(
            file,
            str_off + lo,
            (span_end - lo) as usize,
        )?)
    } else {
        None
    };
    let get = |o: u64| -> Result<String, ElfError> {
        let owned;
        let bytes: &[u8] = match &span {
            Some(s) => &s[(o - lo) as usize..],
            None => {
                let len = (limit - o).min(MAX_STRING as u64) as usize;
                owned = read_exact_or_eof(file, str_off + o, len)?;
                &owned
            }
        };
        let Some(end) = bytes.iter().take(MAX_STRING).position(|&b| b == 0) else {
            return Err(malformed(format!(
                "unterminated or overlong string at dynamic string offset {o}"
            )));
        };
        std::str::from_utf8(&bytes[..end])
            .map(str::to_owned)
            .map_err(|_| malformed(format!("string at dynamic string offset {o} is not UTF-8")))
    };
    for (kind, o) in deps {
        info.deps.push((kind, get(o)?));
    }
    info.rpath = rpath.map(get).transpose()?;
    info.runpath = runpath.map(get).transpose()?;
    info.soname = soname.map(get).transpose()?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{DirRootFs, RootFs};

    fn parse_host(path: &str) -> Result<ElfInfo, ElfError> {
        let fs = DirRootFs::new("/").unwrap();
        let file = fs.open(path).unwrap();
        let head = read_exact_or_eof(&*file, 0, HEAD_LEN).unwrap();
        parse(path, &*file, &head)
    }

    #[test]
    fn parses_host_binaries() {
        let ls = parse_host("/usr/bin/ls").unwrap();
        assert_eq!(ls.class, ElfClass::Elf64);
        assert!(ls.interp.as_deref().unwrap().contains("ld-linux"));
        assert!(ls.needed().any(|n| n == "libc.so.6"));
        let libc = parse_host("/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        assert_eq!(libc.soname.as_deref(), Some("libc.so.6"));
        assert_eq!(libc.e_type, ET_DYN);
    }

    /// Writes `bytes` to a temp root as /f and parses it.
    fn parse_bytes(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), bytes).unwrap();
        let fs = DirRootFs::new(tmp.path()).unwrap();
        let file = fs.open("/f").unwrap();
        let head = read_exact_or_eof(&*file, 0, HEAD_LEN).unwrap();
        parse("/f", &*file, &head)
    }

    #[test]
    fn every_truncation_of_a_real_library_is_an_error_not_a_panic() {
        let bytes = std::fs::read("/usr/lib/x86_64-linux-gnu/libz.so.1").unwrap();
        let full = parse_bytes(&bytes).unwrap();
        assert!(full.needed().any(|n| n == "libc.so.6"));
        let mut errors = 0;
        for len in [0, 3, 15, 16, 40, 63, 64, 100, 500, 4096, bytes.len() / 2] {
            match parse_bytes(&bytes[..len]) {
                Err(_) => errors += 1,
                Ok(info) => assert_ne!(info, full, "len {len}"),
            }
        }
        assert!(errors >= 8);
    }

    #[test]
    fn absurd_header_values_are_reported() {
        let mut bytes = std::fs::read("/usr/lib/x86_64-linux-gnu/libz.so.1").unwrap();
        // e_phnum at offset 56 (u16 LE) for ELF64.
        bytes[56] = 0xfe;
        bytes[57] = 0xff;
        let err = parse_bytes(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                ElfError::Absurd {
                    field: "e_phnum",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("/f: "));
        let mut bytes = std::fs::read("/usr/lib/x86_64-linux-gnu/libz.so.1").unwrap();
        // e_phoff far past the end.
        bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse_bytes(&bytes).unwrap_err(),
            ElfError::Truncated { .. }
        ));
        // Garbage everywhere after the identification must not panic.
        let mut bytes = std::fs::read("/usr/lib/x86_64-linux-gnu/libz.so.1").unwrap();
        let mut x: u32 = 12345;
        for b in bytes.iter_mut().skip(16).take(4000) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        let _ = parse_bytes(&bytes);
    }
}
