//! `ls` and `export` as a user meets them without a volume at hand: help, usage errors, an
//! unreadable image, a file that is not a HAMMER2 volume. Real volumes: `export_fixtures.rs`.

use std::path::Path;
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run hammer2-synchro")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_per_command() {
    for cmd in ["ls", "export"] {
        let o = cli(&[cmd, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        let t = text(&o.stdout);
        assert!(
            t.contains("IMAGE@LABEL") && t.contains("EXIT STATUS"),
            "{cmd}: {t}"
        );
    }
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["ls"][..],
        &["ls", "a", "b", "c"],
        &["ls", "@DATA", "/"],
        &["export", "img@DATA"],
        &["export", "img", "dir"],
        &["ls", "/nonexistent/image@DATA"],
        &["export", "/nonexistent/image@DATA", "/tmp/never"],
    ] {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o.stderr).starts_with("hammer2-synchro: "), "{args:?}");
    }
}

#[test]
fn not_a_volume_exits_1_with_the_fault() {
    let dir = std::env::temp_dir().join(format!("h2-cli-vol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("zeros.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let spec = format!("{}@DATA", img.display());
    for args in [
        vec!["ls", img.to_str().unwrap()],
        vec!["ls", &spec],
        vec!["export", &spec, dir.join("out").to_str().unwrap()],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            text(&o.stderr).contains("bad volume header magic"),
            "{args:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
