//! Readers against hand-written files in CelebA's real format, and malformed variants of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use deeprecog_attributes::{Attribute, COUNT};
use deeprecog_dataset::celeba::{self, CelebA, CelebAConfig};
use deeprecog_dataset::folder::ImageFolder;
use deeprecog_dataset::manifest::Manifest;
use deeprecog_dataset::split::Partition;
use deeprecog_dataset::{Dataset, Error, Image, Target};

const NAMES: &str = "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young ";

// The first rows of the real list_attr_celeba.txt, with its runs of spaces.
const ROW1: &str = "000001.jpg -1  1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1  1 -1  1 -1 -1  1 -1 -1  1 -1 -1 -1  1  1 -1  1 -1  1 -1 -1  1";
const ROW2: &str = "000002.jpg -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1 -1  1 -1 -1  1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1";
const ROW3: &str = "000003.jpg -1 -1 -1 -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1  1  1 -1 -1  1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1  1";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn celeba_dir(eol: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("img_align_celeba");
    std::fs::create_dir(&imgs).unwrap();
    for (i, name) in ["000001.jpg", "000002.jpg", "000003.jpg"].iter().enumerate() {
        Image::filled(178, 218, 3, 40 * i as u8).unwrap().save(&imgs.join(name)).unwrap();
    }
    let attr = ["3", NAMES, ROW1, ROW2, ROW3, ""].join(eol);
    write(dir.path(), celeba::ATTR_FILE, &attr);
    write(
        dir.path(),
        celeba::PARTITION_FILE,
        &["000001.jpg 0", "000002.jpg 1", "000003.jpg 2", ""].join(eol),
    );
    write(
        dir.path(),
        celeba::IDENTITY_FILE,
        &["000001.jpg 2880", "000002.jpg 2937", "000003.jpg 8692", ""].join(eol),
    );
    write(
        dir.path(),
        celeba::LANDMARKS_FILE,
        &[
            "3",
            "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y",
            "000001.jpg    69  109  106  113   77  142   73  152  108  154",
            "000002.jpg    69  110  107  112   81  135   70  151  108  153",
            "000003.jpg    76  112  104  106  108  128   74  156   98  158",
            "",
        ]
        .join(eol),
    );
    write(
        dir.path(),
        celeba::BBOX_FILE,
        &[
            "3",
            "image_id x_1 y_1 width height",
            "000001.jpg    95  71 226 313",
            "000002.jpg    72  94 221 306",
            "000003.jpg   216  59  91 126",
            "",
        ]
        .join(eol),
    );
    dir
}

#[test]
fn celeba_reads_every_file_lf_and_crlf() {
    for eol in ["\n", "\r\n"] {
        let dir = celeba_dir(eol);
        let ds = CelebA::open(
            dir.path(),
            &CelebAConfig::targets(vec![Attribute::Attractive, Attribute::Male]),
        )
        .unwrap();
        assert_eq!(ds.len(), 3);
        let r = &ds.records()[0];
        // Row 1 of the real file: Arched_Eyebrows, Attractive, ... positive; not Male.
        assert!(r.attributes.contains(Attribute::ArchedEyebrows));
        assert!(r.attributes.contains(Attribute::Attractive));
        assert!(!r.attributes.contains(Attribute::Male));
        assert!(r.attributes.contains(Attribute::Young));
        assert_eq!(r.attributes.len(), 13);
        assert_eq!(r.identity, Some(2880));
        assert_eq!(r.partition, Some(Partition::Train));
        assert_eq!(r.landmarks.unwrap().nose, [77.0, 142.0]);
        assert_eq!(r.bbox.unwrap().width, 226.0);
        assert_eq!(ds.partition(Partition::Test), vec![2]);
        assert!(ds.records()[2].attributes.contains(Attribute::Male));

        let s = ds.get(2).unwrap();
        assert_eq!(s.id, "000003.jpg");
        assert_eq!((s.image.width(), s.image.height()), (178, 218));
        assert_eq!(s.target, Target::Labels(vec![0.0, 1.0]));
        assert_eq!(s.group.as_deref(), Some("8692"));
        assert!(ds.missing_images().is_empty());
        assert_eq!(ds.stats().positive(Attribute::Young), 3);
    }
}

#[test]
fn optional_files_may_be_absent_required_may_not() {
    let dir = celeba_dir("\n");
    for f in
        [celeba::PARTITION_FILE, celeba::IDENTITY_FILE, celeba::LANDMARKS_FILE, celeba::BBOX_FILE]
    {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let ds = CelebA::open(dir.path(), &CelebAConfig::default()).unwrap();
    assert_eq!(ds.records()[1].identity, None);
    assert!(ds.partition(Partition::Train).is_empty());

    std::fs::remove_file(dir.path().join(celeba::ATTR_FILE)).unwrap();
    let err = CelebA::open(dir.path(), &CelebAConfig::default()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingFile { path } if path.ends_with(celeba::ATTR_FILE)),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        CelebA::open(empty.path(), &CelebAConfig::default()),
        Err(Error::MissingFile { .. })
    ));
}

fn parse_error_line(err: Error) -> (String, usize, String) {
    match err {
        Error::Parse { path, line, message } => {
            (path.file_name().unwrap().to_string_lossy().into_owned(), line, message)
        }
        other => panic!("expected a parse error, got {other}"),
    }
}

#[test]
fn malformed_attribute_files_name_file_and_line() {
    let p = Path::new("root/list_attr_celeba.txt");
    let cases: Vec<(String, usize, &str)> = vec![
        (String::new(), 1, "empty"),
        ("three\n".into(), 1, "count"),
        ("1\n".into(), 2, "names"),
        (format!("1\n{}\n{ROW1}\n", NAMES.replace("Male", "Handsome")), 2, "Handsome"),
        (format!("1\n{}\n{ROW1}\n", NAMES.replace("Young ", "")), 2, "40"),
        (format!("1\n{NAMES}\n{}\n", &ROW1[..ROW1.len() - 3]), 3, "found 39"),
        (format!("1\n{NAMES}\n{ROW1} 1\n"), 3, "more than 40"),
        (format!("1\n{NAMES}\n{}\n", ROW1.replacen(" 1", " 2", 1)), 3, "\"2\""),
        (format!("2\n{NAMES}\n{ROW1}\n"), 1, "2 images but 1"),
        (format!("2\n{NAMES}\n{ROW1}\n{ROW1}\n"), 4, "twice"),
    ];
    for (text, line, needle) in cases {
        let err = celeba::parse_attributes(&text, p).unwrap_err();
        let msg = err.to_string();
        let (file, l, m) = parse_error_line(err);
        assert_eq!(file, "list_attr_celeba.txt");
        assert_eq!(l, line, "{msg}");
        assert!(m.contains(needle), "{msg} should mention {needle}");
        assert!(msg.starts_with(&format!("root/list_attr_celeba.txt:{line}:")), "{msg}");
    }
    // A good table has 40 columns in order.
    let t = celeba::parse_attributes(&format!("1\n{NAMES}\n{ROW1}"), p).unwrap();
    assert_eq!(t.columns.len(), COUNT);
}

#[test]
fn malformed_side_files_name_file_and_line() {
    let p = Path::new("list_eval_partition.txt");
    assert_eq!(
        parse_error_line(celeba::parse_partition("a.jpg 0\nb.jpg 3\n", p).unwrap_err()).1,
        2
    );
    assert_eq!(parse_error_line(celeba::parse_partition("a.jpg\n", p).unwrap_err()).1, 1);
    assert_eq!(
        parse_error_line(celeba::parse_identity("a.jpg 1\n\nb.jpg x\n", p).unwrap_err()).1,
        3
    );
    let header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y";
    let bad = format!("1\n{header}\na.jpg 1 2 3 4 5 6 7 8 9\n");
    assert_eq!(parse_error_line(celeba::parse_landmarks(&bad, p).unwrap_err()).1, 3);
    let bad = format!("1\n{header}\na.jpg 1 2 3 4 5 6 7 8 9 x\n");
    assert!(parse_error_line(celeba::parse_landmarks(&bad, p).unwrap_err()).2.contains("\"x\""));
    let bad = "1\nimage_id x_1 y_1 width height\na.jpg 1 2 0 4\n";
    assert!(parse_error_line(celeba::parse_bbox(bad, p).unwrap_err()).2.contains("not positive"));
    assert_eq!(parse_error_line(celeba::parse_bbox("1\nx_1 y_1\n", p).unwrap_err()).1, 2);
}

#[test]
fn side_file_that_disagrees_with_the_attribute_table_is_an_error() {
    let dir = celeba_dir("\n");
    write(dir.path(), celeba::PARTITION_FILE, "000001.jpg 0\n000002.jpg 1\n");
    let err = CelebA::open(dir.path(), &CelebAConfig::default()).unwrap_err();
    assert!(matches!(err, Error::Inconsistent { .. }), "{err}");
    assert!(err.to_string().contains("000003.jpg"), "{err}");
    write(
        dir.path(),
        celeba::PARTITION_FILE,
        "000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n000004.jpg 0\n",
    );
    let err = CelebA::open(dir.path(), &CelebAConfig::default()).unwrap_err();
    assert_eq!(parse_error_line(err).1, 4);
}

#[test]
fn missing_or_corrupt_image_is_a_sample_error_naming_the_file() {
    let dir = celeba_dir("\n");
    let imgs = dir.path().join("img_align_celeba");
    std::fs::remove_file(imgs.join("000002.jpg")).unwrap();
    let bytes = std::fs::read(imgs.join("000001.jpg")).unwrap();
    std::fs::write(imgs.join("000003.jpg"), &bytes[..bytes.len() / 3]).unwrap();
    let ds = CelebA::open(dir.path(), &CelebAConfig::default()).unwrap();
    assert_eq!(ds.missing_images().len(), 1);
    assert!(ds.get(1).unwrap_err().to_string().contains("000002.jpg"));
    assert!(ds.get(2).unwrap_err().to_string().contains("000003.jpg"));
    assert!(matches!(ds.get(3), Err(Error::IndexOutOfRange { index: 3, len: 3 })));
}

#[test]
fn image_folder_with_mixed_extensions() {
    let dir = tempfile::tempdir().unwrap();
    for (class, files) in
        [("real", vec!["a.jpg", "b.PNG", "sub/c.JPG"]), ("fake", vec!["d.jpeg", "e.png"])]
    {
        for f in files {
            let p = dir.path().join(class).join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            Image::filled(7, 5, 3, 9).unwrap().save(&p).unwrap();
        }
    }
    std::fs::write(dir.path().join("real/notes.txt"), "not an image").unwrap();
    let sorted = ImageFolder::open(dir.path()).unwrap();
    assert_eq!(sorted.classes(), ["fake", "real"]);
    assert_eq!(sorted.len(), 5);
    let rf = ImageFolder::with_classes(dir.path(), &["real", "fake"]).unwrap();
    assert_eq!(rf.labels(), vec![0, 0, 0, 1, 1]);
    let s = rf.get(2).unwrap();
    assert_eq!(s.id, "real/sub/c.JPG");
    assert_eq!(s.target, Target::Class(0));
    assert_eq!((s.image.width(), s.image.height()), (7, 5));
    assert!(matches!(
        ImageFolder::with_classes(dir.path(), &["real", "gan"]),
        Err(Error::MissingFile { .. })
    ));
}

#[test]
fn manifest_reads_groups_and_reports_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    Image::filled(4, 6, 3, 1).unwrap().save(&dir.path().join("x.png")).unwrap();
    let csv = dir.path().join("m.csv");
    std::fs::write(&csv, "path,label,group,extra\nx.png,1,vid7,zz\nx.png,REAL,,zz\n").unwrap();
    let m = Manifest::open(&csv).unwrap();
    assert_eq!(m.labels(), vec![1, 0]);
    assert_eq!(m.groups(), vec![Some("vid7".to_string()), None]);
    let s = m.get(0).unwrap();
    assert_eq!((s.image.width(), s.image.height(), s.group.as_deref()), (4, 6, Some("vid7")));

    let p = Path::new("m.csv");
    let bad = |text: &str| {
        parse_error_line(
            deeprecog_dataset::manifest::parse_manifest(text.as_bytes(), p).unwrap_err(),
        )
    };
    assert_eq!(bad("file,label\nx.png,1\n").1, 1);
    assert_eq!(bad("path,group\nx.png,1\n").1, 1);
    let (_, line, msg) = bad("path,label\nx.png,1\ny.png,maybe\n");
    assert_eq!(line, 3);
    assert!(msg.contains("maybe"));
    assert_eq!(bad("path,label\nx.png,1\ny.png\n").1, 3);
    assert_eq!(bad("path,label\n,1\n").1, 2);
    assert!(matches!(
        Manifest::open(dir.path().join("absent.csv")),
        Err(Error::MissingFile { .. })
    ));
}
