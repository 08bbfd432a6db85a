//! What expressions mean: precedence, associativity, how far `if` and reductions reach, integer
//! functions, labels and `match`, evaluated by the interpreter on parameters.

use hmdp::check::{NoFiles, Options};

/// The values of every parameter of a model, by name, for instance seed 0.
fn params(body: &str) -> impl Fn(&str) -> Vec<f64> {
    let source = format!(
        "model m\nsize n = 3\nset I = 0..n\nset M = 1..4\n{body}\nstate x = 0\nstep {{\n  x' = x\n  cost c = x\n}}\nhorizon 1\n"
    );
    let outcome = hmdp::check::check_source(&source, &NoFiles, &Options::default());
    let rendered = hmdp::diagnostics::render(&outcome.diagnostics, "m.hmdp", &source, false);
    let model = outcome.model.unwrap_or_else(|| panic!("{source}\n{rendered}"));
    let module = hmdp::ir::lower::lower(&model);
    hmdp::ir::validate(&module).expect("valid");
    let values = hmdp::sim::instance(&module, 0).expect("instance");
    move |name: &str| {
        let id = module.buffers.iter().position(|b| b.name == name).unwrap_or_else(|| panic!("{name}"));
        values.values[id].clone()
    }
}

#[test]
fn precedence_and_associativity() {
    let v = params(
        "param neg_pow = -2^2\nparam pow_right = 2^3^2\nparam mul_first = 1 + 2 * 3\nparam sub_left = 10 - 2 - 3\n\
         param div_left = 12 / 2 / 3\nparam unary_then_mul = -3 * 2\nparam pow_neg_exp = 2^-1\nparam rem = 7 % 3\n\
         param cmp_then_and = 1 < 2 and 3 > 4 or 5 == 5\nparam not_binds_cmp = not 1 > 2",
    );
    assert_eq!(v("neg_pow"), [-4.0], "-x^2 is -(x^2)");
    assert_eq!(v("pow_right"), [512.0], "^ is right-associative");
    assert_eq!(v("mul_first"), [7.0]);
    assert_eq!(v("sub_left"), [5.0]);
    assert_eq!(v("div_left"), [2.0]);
    assert_eq!(v("unary_then_mul"), [-6.0]);
    assert_eq!(v("pow_neg_exp"), [0.5]);
    assert_eq!(v("rem"), [1.0]);
    assert_eq!(v("cmp_then_and"), [1.0], "(1<2 and 3>4) or 5==5");
    assert_eq!(v("not_binds_cmp"), [1.0], "not (1 > 2)");
}

#[test]
fn reach_of_if_and_reductions() {
    let v = params(
        "param if_reaches_right = 1 + if true then 2 else 3 + 4\nparam if_else_reaches = 1 + if false then 2 else 3 + 4\n\
         param sum_reaches_a_product = sum(i in I) i * 2 + 1\nparam two_binders = sum(i in I, j in M) i * j\n\
         param max_red = max(i in I) (i - 1)^2\nparam prod_red = prod(j in M) j\nparam min_fn = min(3, 1, 2)",
    );
    assert_eq!(v("if_reaches_right"), [3.0], "1 + (if true then 2 else (3 + 4))");
    assert_eq!(v("if_else_reaches"), [8.0]);
    assert_eq!(v("sum_reaches_a_product"), [7.0], "(sum of 2i) + 1");
    assert_eq!(v("two_binders"), [18.0], "(0+1+2) * (1+2+3)");
    assert_eq!(v("max_red"), [1.0]);
    assert_eq!(v("prod_red"), [6.0]);
    assert_eq!(v("min_fn"), [1.0]);
}

#[test]
fn functions_indexing_and_choices() {
    let v = params(
        "param f[i in I] = floor(i * 2 / 3) + ceil(0.5) + round(2.5) + abs(-i) + clamp(i, 1, 1.5)\n\
         param g[i in I, j in M] = if i + j == 3 then 1 else 0\nparam h[I] = 7\nparam sel = h[2] + g[1, 2] * 10\n\
         param sm = sigmoid(0) + softplus(0) - log(2) + exp(0) + sqrt(4) + tanh(0) + pow(2, 3)",
    );
    // floor(2i/3) + 1 + 3 (round half away from zero) + i + clamp(i, 1, 1.5)
    assert_eq!(v("f"), [0.0 + 1.0 + 3.0 + 0.0 + 1.0, 0.0 + 1.0 + 3.0 + 1.0 + 1.0, 1.0 + 1.0 + 3.0 + 2.0 + 1.5]);
    assert_eq!(v("g"), [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0], "row-major over (I, M)");
    assert_eq!(v("sel"), [17.0]);
    assert!((v("sm")[0] - (0.5 + 1.0 + 2.0 + 8.0)).abs() < 1e-12);
}

#[test]
fn a_label_next_to_its_choice_means_the_label_even_when_shadowed() {
    let source = "model m\nparam buy = 3\nstate x = 0\naction order: choice { skip, buy }\nstep {\n  x' = x + buy\n  cost c = if order == buy then 1 else 0\n}\nhorizon 5\n";
    let outcome = hmdp::check::check_source(source, &NoFiles, &Options::default());
    assert!(outcome.diagnostics.iter().any(|d| d.code == "label-shadows" && !d.is_error()));
    let module = hmdp::ir::lower::lower(&outcome.model.expect("a warning does not stop the model"));
    let find = |name: &str| module.buffers.iter().position(|b| b.name == name).expect(name);
    let mut buffers = hmdp::sim::instance(&module, 0).expect("instance");
    for (order, cost, next) in [(1.0, 1.0, 3.0), (0.0, 0.0, 3.0)] {
        buffers.values[find("order")][0] = order;
        buffers.values[find("x")][0] = 0.0;
        hmdp::backend::Machine::new(&module, &mut buffers, None).run(&module.step).expect("step");
        assert_eq!(buffers.values[find("c")][0], cost, "`order == buy` compares with the label");
        assert_eq!(buffers.values[find("x'")][0], next, "`buy` alone is the parameter");
    }
}
