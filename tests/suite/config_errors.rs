//! One test per class of config error: each message must name the file, the line and the key.

use muxmed::config::{self, ConfigError, Origin, PipelineConfig};
use std::path::{Path, PathBuf};

fn main_pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/chestxray.yaml")
}

fn parse(text: &str) -> Result<PipelineConfig, ConfigError> {
    config::parse(text, Path::new("p.yaml"), &[])
}

#[test]
fn shipped_pipelines_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            config::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
    let main = config::load(&main_pipeline(), &[]).unwrap().config;
    assert_eq!(main.name, "chestxray");
    assert_eq!(main.model.arch, muxmed::config::Arch::MuxnetM);
}

#[test]
fn unknown_key_names_line_key_and_suggestion() {
    let text = "name: x\ntrain:\n  epochs: 3\n  batchsize: 8\n";
    let err = parse(text).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("train.batchsize"), "{msg}");
    assert!(msg.contains("p.yaml, line 4"), "{msg}");
    assert!(msg.contains("did you mean `batch_size`"), "{msg}");
}

#[test]
fn unknown_top_level_section() {
    let err = parse("name: x\nmodle:\n  arch: muxnet_m\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("modle"), "{msg}");
    assert!(
        msg.contains("line 2") && msg.contains("did you mean `model`"),
        "{msg}"
    );
}

#[test]
fn wrong_type_names_line_and_key() {
    let text = "data:\n  root: x\n  val_fraction: a lot\n";
    let err = parse(text).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("data.val_fraction"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn bad_enum_value_names_line_and_key() {
    let err = parse("data:\n  protocol: randomly\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("data.protocol"), "{msg}");
    assert!(
        msg.contains("line 2") && msg.contains("random_patient"),
        "{msg}"
    );
}

#[test]
fn bad_value_out_of_range() {
    let err = parse("data:\n  root: x\n  val_fraction: 1.5\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("data.val_fraction"), "{msg}");
    assert!(
        msg.contains("line 3") && msg.contains("between 0 and 1"),
        "{msg}"
    );

    let err = parse("data:\n  filters:\n    labels: [Efusion]\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("data.filters.labels[0]"), "{msg}");
    assert!(
        msg.contains("line 3") && msg.contains("`Effusion`"),
        "{msg}"
    );
}

#[test]
fn subgroup_settings_are_checked() {
    let err = parse("eval:\n  subgroups:\n    age_bands: [40, 20]\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("eval.subgroups.age_bands"), "{msg}");
    assert!(
        msg.contains("line 3") && msg.contains("increasing"),
        "{msg}"
    );
    let err = parse("eval:\n  subgroups:\n    min_positive: 5\n").unwrap_err();
    assert!(err.to_string().contains("min_positive"), "{err}");
    let err = parse("eval:\n  subgroups:\n    min_positives: 0\n").unwrap_err();
    assert_eq!(err.key(), Some("eval.subgroups.min_positives"));
}

#[test]
fn missing_file_names_the_pipeline_and_lists_available() {
    let dir = main_pipeline().parent().unwrap().to_path_buf();
    let err = config::resolve_pipeline_path("chestxary", &dir).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::NotFound { .. }));
    assert!(
        msg.contains("chestxary.yaml") && msg.contains("chestxray"),
        "{msg}"
    );

    let err = config::load(Path::new("/nonexistent/p.yaml"), &[]).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/p.yaml"), "{err}");
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let err = parse("train:\n  epochs: [1, 2\n  lr: 3\n").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{msg}");
    assert!(msg.contains("p.yaml") && msg.contains("line"), "{msg}");
}

#[test]
fn overrides_are_typed_and_blamed() {
    let p = main_pipeline();
    let c = config::load(
        &p,
        &["train.lr=3e-4".into(), "data.filters.views=[PA]".into()],
    )
    .unwrap()
    .config;
    assert_eq!(c.train.lr, 3e-4);
    assert_eq!(c.data.filters.views, vec!["PA".to_string()]);

    let err = config::load(&p, &["train.epochs=many".into()]).unwrap_err();
    match &err {
        ConfigError::Invalid { origin, key, .. } => {
            assert_eq!(key, "train.epochs");
            assert_eq!(origin, &Origin::Override("train.epochs=many".into()));
        }
        other => panic!("unexpected {other}"),
    }
    let err = config::load(&p, &["train.lrr=1".into()]).unwrap_err();
    assert!(err.to_string().contains("did you mean `lr`"), "{err}");
    assert!(config::load(&p, &["no_equals_sign".into()]).is_err());
}

#[test]
fn resolved_config_round_trips() {
    let c = config::load(&main_pipeline(), &["train.epochs=3".into()])
        .unwrap()
        .config;
    let again = config::parse(&c.to_yaml(), Path::new("resolved.yaml"), &[]).unwrap();
    assert_eq!(c, again);
}

#[test]
fn unknown_augmentation_stage_or_parameter() {
    let text =
        "augment:\n  train:\n    - random_resized_crop: {size: 224}\n    - sharpen: {amount: 2}\n";
    let err = parse(text).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("augment.train[1]"), "{msg}");
    assert!(
        msg.contains("line 4") && msg.contains("unknown variant `sharpen`"),
        "{msg}"
    );

    let text = "augment:\n  train:\n    - random_resized_crop: {size: 224, scales: [0.5, 1]}\n";
    let err = parse(text).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("line 3") && msg.contains("unknown field `scales`"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `scale`"), "{msg}");
}

#[test]
fn augmentation_must_end_at_the_model_input() {
    let text = "augment:\n  eval:\n    - resize: {size: 224}\n    - center_crop: {size: 224}\n";
    let err = parse(text).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("augment.eval"), "{msg}");
    assert!(msg.contains("1x224x224") && msg.contains("to_rgb"), "{msg}");
    let text = "augment:\n  eval:\n    - normalize_imagenet\n    - to_rgb\n";
    let err = parse(text).unwrap_err();
    assert_eq!(err.key(), Some("augment.eval[0]"), "{err}");
}

#[test]
fn random_stages_in_eval_or_tta_are_refused_by_name() {
    let text = "augment:\n  eval:\n    - random_resized_crop: {size: 224}\n    - to_rgb\n    - normalize_imagenet\n";
    let err = parse(text).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("augment.eval[0]"), "{msg}");
    assert!(
        msg.contains("random_resized_crop") && msg.contains("deterministic"),
        "{msg}"
    );
    let text = "augment:\n  tta:\n    - [resize: {size: 224}, center_crop: {size: 224}, horizontal_flip: {p: 0.5}, to_rgb, normalize_imagenet]\n";
    let err = parse(text).unwrap_err();
    assert_eq!(err.key(), Some("augment.tta[0][2]"), "{err}");
    // A flip that always happens is deterministic: a valid TTA pipeline.
    let text = "augment:\n  tta:\n    - [resize: {size: 224}, center_crop: {size: 224}, horizontal_flip: {p: 1.0}, to_rgb, normalize_imagenet]\n";
    parse(text).unwrap();
}

#[test]
fn pos_weight_with_class_balanced_sampling_is_refused() {
    let err = parse("train:\n  pos_weight: true\n  class_balanced: true\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("train.pos_weight"), "{msg}");
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn transfer_recipe_defaults() {
    use muxmed::config::Arch;
    let c = PipelineConfig::default();
    // Decoupled AdamW decay: 1e-4 would be almost no regularisation.
    assert_eq!(c.train.weight_decay, 0.05);
    assert_eq!(c.train.unfreeze_warmup_epochs, 1.0);
    // The authors' drop_connect_rate per architecture, unless set.
    let mut m = c.model.clone();
    assert_eq!(m.drop_path(), 0.1);
    m.arch = Arch::MuxnetL;
    assert_eq!(m.drop_path(), 0.15);
    m.arch = Arch::Densenet121;
    assert_eq!(m.drop_path(), 0.0);
    m.drop_path_rate = Some(0.3);
    assert_eq!(m.drop_path(), 0.3);
    let err = parse("model:\n  arch: muxnet_mm\n").unwrap_err();
    assert_eq!(err.key(), Some("model.arch"), "{err}");
    assert!(err.to_string().contains("did you mean `muxnet_m`"), "{err}");
}

#[test]
fn an_empty_pipeline_file_is_refused() {
    for text in ["", "\n\n", "# only a comment\n"] {
        let err = parse(text).unwrap_err();
        assert!(
            err.to_string().contains("p.yaml") && err.to_string().contains("empty"),
            "{err}"
        );
    }
}

#[test]
fn a_rule_broken_by_an_override_of_another_key_names_the_override() {
    let err = config::load(&main_pipeline(), &["train.resolution=64".into()]).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("augment.train"), "{msg}");
    assert!(msg.contains("--set train.resolution=64"), "{msg}");
}

#[test]
fn search_section_errors_name_line_and_key() {
    let err = parse("search:\n  proxy:\n    epoch: 3\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("search.proxy.epoch"), "{msg}");
    assert!(
        msg.contains("line 3") && msg.contains("did you mean `epochs`"),
        "{msg}"
    );
    let err =
        parse("search:\n  space:\n    widths: [[20], [32], [64], [96], [128]]\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("search.space.widths"), "{msg}");
    assert!(
        msg.contains("line 3") && msg.contains("multiple of 8"),
        "{msg}"
    );
    let err = parse("search:\n  space:\n    strides: [2, 2]\n").unwrap_err();
    assert!(
        err.to_string().contains("one list of choices per stage"),
        "{err}"
    );
    // The default section describes the space MUXNet-m and -l live in.
    let main = config::load(&main_pipeline(), &[]).unwrap().config;
    assert_eq!(main.search, muxmed::config::SearchConfig::default());
}

/// `prepare` caches images at augment.working_size: a pipeline whose stages would enlarge
/// them past it is refused, naming the stage, train.resolution and augment.working_size.
#[test]
fn stages_that_upsample_beyond_the_working_size_are_refused() {
    let at = |res: u32, working: u32| {
        format!(
            "augment:\n  working_size: {working}\n  train:\n    - random_resized_crop: {{size: {res}}}\n    - to_rgb\n    - normalize_imagenet\n  eval:\n    - resize: {{size: {res}}}\n    - center_crop: {{size: {res}}}\n    - to_rgb\n    - normalize_imagenet\n  tta: []\ntrain:\n  resolution: {res}\n"
        )
    };
    let err = parse(&at(448, 256)).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("augment.train[0]"), "{msg}");
    for part in [
        "random_resized_crop",
        "448x448 from 256x256",
        "augment.working_size (256)",
        "train.resolution",
        "at least 448",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    // The eval pipeline alone upsampling is refused too.
    let text = at(320, 320).replace("resize: {size: 320}", "resize: {size: 400}");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key(), Some("augment.eval[0]"), "{err}");
    // With the working size raised, 320-pixel training is a valid pipeline.
    let c = parse(&at(320, 320)).unwrap();
    assert_eq!((c.train.resolution, c.augment.working_size), (320, 320));
    let c = parse(&at(448, 512)).unwrap();
    assert_eq!(c.train.resolution, 448);
}

#[test]
fn test_fraction_is_refused_where_the_files_give_the_test_split() {
    let err = parse("data:\n  protocol: official\n  test_fraction: 0.3\n").unwrap_err();
    assert_eq!(err.key(), Some("data.test_fraction"), "{err}");
    assert!(err.to_string().contains("official"), "{err}");
    let err =
        parse("data:\n  protocol: random_patient\n  val_fraction: 0.5\n  test_fraction: 0.5\n")
            .unwrap_err();
    assert_eq!(err.key(), Some("data.test_fraction"), "{err}");
    parse("data:\n  protocol: random_patient\n  test_fraction: 0.3\n").unwrap();
}

/// DenseNet-121's head dropout follows CheXNet (none) unless the pipeline sets one; MUXNets
/// keep the authors' 0.2. The shipped pipeline leaves it to the architecture.
#[test]
fn head_dropout_defaults_follow_the_architecture() {
    let c = config::load(&main_pipeline(), &["model.arch=densenet121".into()])
        .unwrap()
        .config;
    assert_eq!((c.model.drop_rate, c.model.drop()), (None, 0.0));
    let c = config::load(&main_pipeline(), &[]).unwrap().config;
    assert_eq!(c.model.drop(), 0.2);
    let c = parse("model:\n  arch: densenet121\n  drop_rate: 0.3\n").unwrap();
    assert_eq!(c.model.drop(), 0.3);
}

/// A folder `./covid` beside `pipelines/covid.yaml` does not shadow the pipeline: a bare name
/// means the pipeline first; a folder alone is named with the file that was looked for.
#[test]
fn a_folder_does_not_shadow_a_pipeline_of_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::create_dir_all(dir.path().join("covid")).unwrap();
    std::fs::create_dir_all(dir.path().join("other")).unwrap();
    std::fs::write(dir.path().join("pipelines/covid.yaml"), "name: covid\n").unwrap();
    let run = |name: &str| {
        let mut c = crate::muxmed();
        c.current_dir(dir.path())
            .args(["config", "--pipeline", name])
            .output()
            .unwrap()
    };
    let o = run("covid");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("name: covid"), "{out}");
    let o = run("other");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("is a folder") && err.contains("other.yaml"),
        "{err}"
    );
}

#[test]
fn a_tab_in_the_indentation_is_named_at_its_own_line() {
    let text = "name: x\ntrain:\n  epochs: 3\n\tbatch_size: 8\n";
    let msg = parse(text).unwrap_err().to_string();
    assert!(msg.contains("line 4: a tab in the indentation"), "{msg}");
    // A tab inside a value or comment is not indentation.
    parse("name: x # a\tcomment\n").unwrap();
}
