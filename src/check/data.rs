//! Parameter values read from data files (`param mu[I] from "mu.csv"`): CSV or JSON, checked
//! against the parameter's shape. The file is read by the caller ([`super::DataFiles`]); this
//! module only interprets text, so the checker itself does no IO.

/// Values in row-major order and the shape the file has.
#[derive(Debug, PartialEq)]
pub struct Table {
    pub values: Vec<f64>,
    pub shape: Vec<usize>,
}

/// Reads a CSV table of numbers. A first row that is not all numbers is taken as a header.
/// Blank lines are skipped. A single row or a single column is a vector.
pub fn parse_csv(text: &str) -> Result<Table, String> {
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Result<Vec<f64>, _> = cells.iter().map(|c| c.parse::<f64>()).collect();
        match parsed {
            Ok(row) => {
                if let Some(bad) = row.iter().position(|v| !v.is_finite()) {
                    return Err(format!("line {}: value {} is not a finite number", number + 1, bad + 1));
                }
                if let Some(first) = rows.first()
                    && first.len() != row.len()
                {
                    return Err(format!(
                        "line {}: {} values, but the first row has {}",
                        number + 1,
                        row.len(),
                        first.len()
                    ));
                }
                rows.push(row);
            }
            Err(_) if rows.is_empty() && number == first_nonblank(text) => {} // header
            Err(_) => {
                let bad = cells.iter().find(|c| c.parse::<f64>().is_err()).copied().unwrap_or("");
                return Err(format!("line {}: `{bad}` is not a number", number + 1));
            }
        }
    }
    let columns = rows.first().map_or(0, Vec::len);
    let shape = match (rows.len(), columns) {
        (0, _) => return Err("the file holds no numbers".into()),
        (1, 1) => vec![],
        (1, n) => vec![n],
        (m, 1) => vec![m],
        (m, n) => vec![m, n],
    };
    Ok(Table { values: rows.into_iter().flatten().collect(), shape })
}

fn first_nonblank(text: &str) -> usize {
    text.lines().position(|l| !l.trim().is_empty()).unwrap_or(0)
}

/// Reads a JSON number or nested arrays of numbers with a regular (rectangular) shape.
pub fn parse_json(text: &str) -> Result<Table, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let mut shape = Vec::new();
    let mut probe = &value;
    while let serde_json::Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut values = Vec::new();
    flatten(&value, &shape, &mut values, "")?;
    Ok(Table { values, shape })
}

fn flatten(value: &serde_json::Value, shape: &[usize], out: &mut Vec<f64>, at: &str) -> Result<(), String> {
    match (value, shape.split_first()) {
        (serde_json::Value::Number(n), None) => match n.as_f64() {
            Some(v) if v.is_finite() => {
                out.push(v);
                Ok(())
            }
            _ => Err(format!("value{at} is not a finite number")),
        },
        (serde_json::Value::Array(items), Some((&len, rest))) if items.len() == len => {
            for (i, item) in items.iter().enumerate() {
                flatten(item, rest, out, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (serde_json::Value::Array(items), Some((&len, _))) => {
            Err(format!("array{at} has {} entries, but its siblings have {len}", items.len()))
        }
        (other, _) => Err(format!(
            "value{at} is {}, expected {}",
            kind(other),
            if shape.is_empty() { "a number" } else { "an array" }
        )),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_shapes() {
        assert_eq!(parse_csv("1,2,3\n").unwrap().shape, vec![3]);
        assert_eq!(parse_csv("mu\n1\n2\n").unwrap(), Table { values: vec![1.0, 2.0], shape: vec![2] });
        assert_eq!(parse_csv("1,2\n3,4\n5,6\n").unwrap().shape, vec![3, 2]);
        assert_eq!(parse_csv("7").unwrap().shape, Vec::<usize>::new());
        assert!(parse_csv("1,2\n3\n").unwrap_err().contains("line 2"));
        assert!(parse_csv("a\n1\nx\n").unwrap_err().contains("`x` is not a number"));
        assert!(parse_csv("").is_err());
    }

    #[test]
    fn json_shapes() {
        assert_eq!(parse_json("[[1,2],[3,4]]").unwrap(), Table { values: vec![1.0, 2.0, 3.0, 4.0], shape: vec![2, 2] });
        assert_eq!(parse_json("2.5").unwrap().shape, Vec::<usize>::new());
        assert!(parse_json("[[1,2],[3]]").unwrap_err().contains("[1] has 1 entries"));
        assert!(parse_json("[1, \"a\"]").unwrap_err().contains("string"));
        assert!(parse_json("{").unwrap_err().contains("not valid JSON"));
    }
}
