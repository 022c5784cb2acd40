//! Tarball safety cases, built in memory with the `tar` crate.

use super::*;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use tempfile::TempDir;

/// One tarball entry; paths and link names are written raw, unvalidated.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Special(&'a str, EntryType),
}

fn raw_header(path: &str, kind: EntryType, link: Option<&str>, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    let old = h.as_old_mut();
    old.name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(link) = link {
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    h
}

fn tarball(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for e in entries {
        let (h, data): (_, &[u8]) = match e {
            E::Dir(p) => (raw_header(p, EntryType::Directory, None, 0, 0o755), b""),
            E::File(p, data, mode) => (raw_header(p, EntryType::Regular, None, data.len() as u64, *mode), data),
            E::Symlink(p, t) => (raw_header(p, EntryType::Symlink, Some(t), 0, 0o777), b""),
            E::HardLink(p, t) => (raw_header(p, EntryType::Link, Some(t), 0, 0o644), b""),
            E::Special(p, kind) => (raw_header(p, *kind, None, 0, 0o644), b""),
        };
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

struct Case {
    tmp: TempDir,
}

impl Case {
    fn new() -> Self {
        Case { tmp: tempfile::tempdir().unwrap() }
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("release")
    }
    fn unpack(&self, entries: &[E]) -> Result<(), UnpackError> {
        self.unpack_with(entries, &UnpackLimits::default())
    }
    fn unpack_with(&self, entries: &[E], limits: &UnpackLimits) -> Result<(), UnpackError> {
        let file = self.tmp.path().join("a.tar.gz");
        fs::write(&file, tarball(entries)).unwrap();
        unpack(ArtifactFormat::TarGz, &file, "http://x/a.tar.gz", &self.dir(), limits)
    }
    /// Nothing was created outside the release directory.
    fn assert_nothing_outside(&self) {
        let mut names: Vec<_> = fs::read_dir(self.tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["a.tar.gz", "release"]);
    }
}

fn refused(entry: &str, reason: Refusal) -> Result<(), UnpackError> {
    Err(UnpackError::Refused { entry: entry.into(), reason })
}

#[test]
fn good_tarball_with_nested_dirs_and_in_tree_symlinks() {
    let case = Case::new();
    let result = case.unpack(&[
        E::Dir("./"),
        E::Dir("app/"),
        E::File("app/bin/run", b"#!/bin/sh\n", 0o4755),
        E::File("./app/lib/deep/data.txt", b"data", 0o644),
        E::Symlink("app/current", "bin/run"),
        E::Symlink("app/lib/deep/up", "../../bin/run"),
        E::Symlink("here", "."),
        E::HardLink("app/data-copy", "app/lib/deep/data.txt"),
    ]);
    assert_eq!(result, Ok(()));
    let dir = case.dir();
    assert_eq!(fs::read(dir.join("app/current")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read(dir.join("app/lib/deep/up")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read(dir.join("app/data-copy")).unwrap(), b"data");
    let mode = fs::metadata(dir.join("app/bin/run")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "setuid is dropped, the rest kept");
    let world = fs::metadata(dir.join("app/lib/deep/data.txt")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(world, 0o644);
    assert!(fs::symlink_metadata(dir.join("here")).unwrap().file_type().is_symlink());
    case.assert_nothing_outside();
}

#[test]
fn absolute_path_is_refused() {
    let case = Case::new();
    assert_eq!(case.unpack(&[E::File("/tmp/evil", b"x", 0o644)]), refused("/tmp/evil", Refusal::AbsolutePath));
}

#[test]
fn parent_dir_is_refused() {
    let case = Case::new();
    assert_eq!(case.unpack(&[E::File("../x", b"x", 0o644)]), refused("../x", Refusal::ParentDir));
    let case = Case::new();
    assert_eq!(case.unpack(&[E::File("a/../../x", b"x", 0o644)]), refused("a/../../x", Refusal::ParentDir));
    case.assert_nothing_outside();
}

#[test]
fn symlink_to_an_absolute_path_is_refused() {
    let case = Case::new();
    let want = refused("etc", Refusal::LinkEscapes { target: "/etc".into() });
    assert_eq!(case.unpack(&[E::Symlink("etc", "/etc")]), want);
}

#[test]
fn symlink_climbing_out_is_refused() {
    let case = Case::new();
    let want = refused("a/up", Refusal::LinkEscapes { target: "../..".into() });
    assert_eq!(case.unpack(&[E::Symlink("a/up", "../..")]), want);
}

#[test]
fn symlink_climbing_after_descending_is_refused() {
    // `here -> .` is fine, but `here/../etc` would leave the directory through it.
    let case = Case::new();
    let want = refused("x", Refusal::LinkEscapes { target: "here/../etc".into() });
    assert_eq!(case.unpack(&[E::Symlink("here", "."), E::Symlink("x", "here/../etc")]), want);
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let case = Case::new();
    let want = refused("p/p/esc", Refusal::ThroughSymlink);
    assert_eq!(case.unpack(&[E::Symlink("p", "."), E::Symlink("p/p/esc", "../../../etc")]), want);
    let case = Case::new();
    let want = refused("lib/evil", Refusal::ThroughSymlink);
    assert_eq!(case.unpack(&[E::Dir("real/"), E::Symlink("lib", "real"), E::File("lib/evil", b"x", 0o644)]), want);
}

#[test]
fn hard_link_escaping_is_refused() {
    let case = Case::new();
    let want = refused("passwd", Refusal::BadHardLink { target: "/etc/passwd".into() });
    assert_eq!(case.unpack(&[E::HardLink("passwd", "/etc/passwd")]), want);
    let case = Case::new();
    let want = refused("x", Refusal::BadHardLink { target: "../../etc/passwd".into() });
    assert_eq!(case.unpack(&[E::HardLink("x", "../../etc/passwd")]), want);
}

#[test]
fn hard_link_to_a_symlink_is_refused() {
    // Linking the symlink itself would move its relative target to another depth.
    let case = Case::new();
    let want = refused("l2", Refusal::BadHardLink { target: "a/b/l".into() });
    assert_eq!(case.unpack(&[E::Symlink("a/b/l", "../../x"), E::HardLink("l2", "a/b/l")]), want);
}

#[test]
fn device_files_are_refused() {
    for (kind, name) in
        [(EntryType::Char, "character device"), (EntryType::Block, "block device"), (EntryType::Fifo, "fifo")]
    {
        let case = Case::new();
        let want = refused("dev/x", Refusal::SpecialFile { kind: name.into() });
        assert_eq!(case.unpack(&[E::Special("dev/x", kind)]), want);
    }
}

#[test]
fn garbage_is_an_archive_error() {
    let case = Case::new();
    let file = case.tmp.path().join("a.tar.gz");
    fs::write(&file, b"not gzip at all").unwrap();
    let err = unpack(ArtifactFormat::TarGz, &file, "u", &case.dir(), &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Archive { .. }), "{err:?}");
}

#[test]
fn non_empty_target_is_refused() {
    let case = Case::new();
    fs::create_dir_all(case.dir()).unwrap();
    fs::write(case.dir().join("old"), b"x").unwrap();
    assert_eq!(case.unpack(&[E::Dir("a/")]), Err(UnpackError::NotEmpty { dir: case.dir() }));
}

#[test]
fn single_file_is_installed_executable() {
    let case = Case::new();
    let file = case.tmp.path().join("download");
    let mut f = fs::File::create(&file).unwrap();
    f.write_all(b"\x7fELF...").unwrap();
    let url = "https://example.com/dl/api-server?token=x";
    unpack(ArtifactFormat::File, &file, url, &case.dir(), &UnpackLimits::default()).unwrap();
    let installed = case.dir().join("api-server");
    assert_eq!(fs::read(&installed).unwrap(), b"\x7fELF...");
    assert_eq!(fs::metadata(&installed).unwrap().permissions().mode() & 0o7777, 0o755);
}

#[test]
fn file_names_are_sanitised() {
    let cases = [
        ("https://h/a/api", "api"),
        ("https://h/a/api-1.2+b.bin?x=1#f", "api-1.2+b.bin"),
        ("file:///srv/my%20tool", "my_20tool"),
        ("https://h/a/..", "artifact"),
        ("https://h/a/.hidden", "hidden"),
        ("https://h/a/", "artifact"),
        ("https://h/a/b c;rm", "b_c_rm"),
    ];
    for (url, want) in cases {
        assert_eq!(file_name_from_url(url), want, "{url}");
    }
}

#[test]
fn group_and_world_writable_modes_are_stripped() {
    let case = Case::new();
    let result = case.unpack(&[
        E::File("bin/run", b"#!/bin/sh\n", 0o4777),
        E::File("etc/conf", b"x", 0o666),
        E::File("etc/group", b"x", 0o2775),
    ]);
    assert_eq!(result, Ok(()));
    let mode = |p: &str| fs::metadata(case.dir().join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/run"), 0o755, "04777 becomes 0755: root runs it next");
    assert_eq!(mode("etc/conf"), 0o644);
    assert_eq!(mode("etc/group"), 0o755);
    assert_eq!(file_mode(0o7777), 0o755);
}

/// Octal, NUL-terminated, as tar headers hold numbers.
fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

/// A GNU sparse entry of one data byte that claims to expand to `real` bytes.
fn sparse_bomb(real: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_path("bomb").unwrap();
    h.set_mode(0o644);
    h.set_size(512);
    let gnu = h.as_gnu_mut().unwrap();
    octal(&mut gnu.realsize, real);
    octal(&mut gnu.sparse[0].offset, real - 512);
    octal(&mut gnu.sparse[0].numbytes, 512);
    h.set_cksum();
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    builder.append(&h, &[7u8; 512][..]).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn a_sparse_bomb_is_counted_by_what_it_expands_to() {
    let case = Case::new();
    let file = case.tmp.path().join("bomb.tar.gz");
    let bomb = sparse_bomb(64 << 20);
    assert!(bomb.len() < 1024, "the bomb is {} bytes", bomb.len());
    fs::write(&file, &bomb).unwrap();
    let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 10 };
    let err = unpack(ArtifactFormat::TarGz, &file, "http://x/b.tar.gz", &case.dir(), &limits).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Refused { reason: Refusal::TooLarge { limit }, .. } if *limit == 1 << 20),
        "{err}"
    );
    // Within the limit the same entry unpacks to its real size.
    let case = Case::new();
    let file = case.tmp.path().join("small.tar.gz");
    fs::write(&file, sparse_bomb(4096)).unwrap();
    unpack(ArtifactFormat::TarGz, &file, "http://x/s.tar.gz", &case.dir(), &limits).unwrap();
    assert_eq!(fs::metadata(case.dir().join("bomb")).unwrap().len(), 4096);
}

#[test]
fn too_many_entries_are_refused() {
    let case = Case::new();
    let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let entries: Vec<E> = names.iter().map(|n| E::File(n, b"x", 0o644)).collect();
    let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 10 };
    assert_eq!(case.unpack_with(&entries, &limits), refused("f10", Refusal::TooManyEntries { limit: 10 }));
    let case = Case::new();
    assert_eq!(case.unpack_with(&entries[..10], &limits), Ok(()));
}

#[test]
fn control_characters_in_names_are_refused() {
    let case = Case::new();
    assert_eq!(case.unpack(&[E::File("bin/a\nb", b"x", 0o644)]), refused("bin/a\\nb", Refusal::ControlCharacter('\n')));
    let case = Case::new();
    let esc = "\u{1b}[31mred";
    assert_eq!(
        case.unpack(&[E::File(esc, b"x", 0o644)]),
        refused("\\u{1b}[31mred", Refusal::ControlCharacter('\u{1b}'))
    );
    let case = Case::new();
    assert_eq!(case.unpack(&[E::Symlink("l", "a\tb")]), refused("l", Refusal::ControlCharacter('\t')));
}
