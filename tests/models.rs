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
    assert!(matches!(&q.ty, ActionType::Continuous { lo: Some(_), hi: None, sum: None, when: Some(_) }));
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

/// The battery's bounds follow its state of charge, so a policy that stays within them never
/// overfills or overdraws it; and within those bounds it is the same problem as
/// `tests/models/energy_storage_min.hmdp`, which bounds the actions by the rating alone and
/// takes a `min` in the step.
#[test]
fn energy_storage_bounds_follow_the_state_of_charge() {
    let m = check_model("energy_storage.hmdp", &[]);
    for name in ["charge", "discharge"] {
        let a = m.actions.iter().find(|a| a.name == name).expect(name);
        assert!(matches!(&a.ty, ActionType::Continuous { lo: Some(_), hi: Some(_), sum: None, when: None }), "{name}");
    }
    let module = common::compile_file(&common::root().join("models/energy_storage.hmdp"), &[]);
    let with_min = common::compile_file(&common::root().join("tests/models/energy_storage_min.hmdp"), &[]);
    assert!(!module.bounds_vjp.body.is_empty(), "the bounds read the state and are differentiated");
    assert!(with_min.bounds_vjp.body.is_empty(), "constant bounds have no derivative");
    let find = |module: &hmdp::ir::Module, name: &str| module.buffers.iter().position(|b| b.name == name).expect(name);
    let instance = hmdp::sim::instance(&module, 0).expect("instance");
    let other = hmdp::sim::instance(&with_min, 0).expect("instance");
    for point in 0..40 {
        let mut at = hmdp::sim::gradcheck::prepare(&module, &instance, 7, point).expect("a random policy runs");
        let soc = at.values[find(&module, "soc")][0];
        assert!((0.0..=100.0 + 1e-9).contains(&soc), "point {point}: state of charge {soc}");
        hmdp::backend::Machine::new(&module, &mut at, None).run(&module.step).expect("step");
        let mut same = other.clone();
        for name in ["soc", "price", "shock", "charge", "discharge"] {
            same.values[find(&with_min, name)].clone_from(&at.values[find(&module, name)]);
        }
        hmdp::backend::Machine::new(&with_min, &mut same, None).run(&with_min.step).expect("step");
        for name in ["soc'", "energy", "wear"] {
            let (a, b) = (at.values[find(&module, name)][0], same.values[find(&with_min, name)][0]);
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "point {point}: `{name}` {a} vs {b}");
        }
    }
}
