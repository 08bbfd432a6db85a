//! Every shipped model checks clean, also at other sizes, and means what its header says.

mod common;

use hmdp::check::{ActionType, Options, ReportScale};

fn check_model(name: &str, overrides: &[(&str, f64)]) -> hmdp::check::CheckedModel {
    let path = common::root().join("models").join(name);
    let bytes = std::fs::read(&path).expect("model is readable");
    let options = Options { overrides: overrides.iter().map(|(n, v)| (n.to_string(), *v)).collect() };
    let (source, diagnostics, _) = common::check_bytes(bytes, &common::root().join("models"), &options);
    let rendered = hmdp::diagnostics::render(&diagnostics, name, &source, false);
    assert!(diagnostics.is_empty(), "{name} should check clean:\n{rendered}");
    hmdp::check::check_source(&source, &common::Folder(common::root().join("models")), &options)
        .model
        .expect("a clean model is returned")
}

#[test]
fn every_shipped_model_checks_clean() {
    let models = common::models();
    assert!(models.len() >= 6, "expected at least six shipped models, found {}", models.len());
    for path in models {
        let name = path.file_name().and_then(|n| n.to_str()).expect("file name");
        let source = std::fs::read_to_string(&path).expect("readable");
        assert!(source.starts_with("//"), "{name} must open with a comment saying what problem it is");
        check_model(name, &[]);
    }
}

#[test]
fn inventory_is_the_joint_replenishment_problem() {
    let m = check_model("inventory.hmdp", &[]);
    assert_eq!(m.name, "joint_replenishment");
    assert_eq!(m.horizon, 100);
    assert_eq!(m.warmup, 16);
    let items = m.symbols.get("items").copied();
    assert!(matches!(items, Some(hmdp::check::Symbol::Size(_))));
    assert_eq!(m.report, vec![ReportScale::Period, ReportScale::Size(0)]);
    let order = m.actions.iter().find(|a| a.name == "order").expect("order action");
    assert!(matches!(&order.ty, ActionType::Discrete { labels, .. } if labels == &["skip", "buy"]));
    assert!(order.dims.is_empty(), "one decision shared by all items");
    let q = m.actions.iter().find(|a| a.name == "q").expect("q action");
    assert!(matches!(&q.ty, ActionType::Continuous { lo: Some(_), hi: None, when: Some(_) }));
    let costs: Vec<&str> = m.costs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(costs, ["holding", "shortage", "fixed"]);
    assert_eq!(m.params.iter().find(|p| p.name == "K").and_then(|p| p.constant), Some(640.0));
}

#[test]
fn sizes_can_be_overridden() {
    let m = check_model("inventory.hmdp", &[("items", 50.0)]);
    let q = m.actions.iter().find(|a| a.name == "q").expect("q");
    assert_eq!(m.count(&q.dims), 50);
    assert_eq!(m.params.iter().find(|p| p.name == "K").and_then(|p| p.constant), Some(3200.0));

    let m = check_model("switched_lqr.hmdp", &[("n", 48.0), ("modes", 8.0)]);
    let mode = m.actions.iter().find(|a| a.name == "mode").expect("mode");
    // A `choice[SET]` keeps its set, not its labels written out (a set may hold 10^9).
    assert!(matches!(&mode.ty, ActionType::Discrete { labels, over_set: Some(_) } if labels.is_empty()));
    assert_eq!(m.label_count(mode), 8);
    assert_eq!(m.label_position(mode, "3"), Some(3));
    assert_eq!(m.labels(mode).last().map(String::as_str), Some("7"));

    // Loops stay loops: a 10 000-item inventory checks like a 10-item one.
    let m = check_model("inventory.hmdp", &[("items", 10_000.0)]);
    assert_eq!(m.count(&m.states[0].dims), 10_000);
}

#[test]
fn data_files_are_loaded_with_their_shape() {
    let m = check_model("data_demand.hmdp", &[]);
    let from_files: Vec<_> =
        m.params.iter().filter(|p| matches!(p.definition, hmdp::check::Definition::Data(_))).collect();
    assert!(!from_files.is_empty(), "data_demand.hmdp reads parameters from files");
    for p in from_files {
        let hmdp::check::Definition::Data(values) = &p.definition else { unreachable!() };
        assert_eq!(values.len(), m.count(&p.dims), "{} has one value per element", p.name);
    }
}
