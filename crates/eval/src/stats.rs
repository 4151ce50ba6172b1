//! Small exact statistics: the two-sided sign test, medians and ranges,
//! and time formatting.

/// Exact two-sided sign test of paired values `a` and `b`.
///
/// Ties (b == a) are dropped, the usual convention (Dixon & Mood 1946):
/// with n untied pairs and k of them b > a, the p-value is
/// min(1, 2 · P(X ≤ min(k, n − k))) for X ~ Binomial(n, 1/2), computed
/// exactly in log space. Returns (p, n untied, k with b > a); p = 1 when
/// every pair is tied.
pub fn sign_test(a: &[f64], b: &[f64]) -> (f64, usize, usize) {
    let mut n = 0usize;
    let mut k = 0usize;
    for (x, y) in a.iter().zip(b) {
        if !(x.is_finite() && y.is_finite()) || x == y {
            continue;
        }
        n += 1;
        if y > x {
            k += 1;
        }
    }
    if n == 0 {
        return (1.0, 0, 0);
    }
    let m = k.min(n - k);
    // log C(n, i) built up incrementally; P(X = i) = C(n, i) / 2^n.
    let ln2n = n as f64 * std::f64::consts::LN_2;
    let mut log_c = 0.0f64;
    let mut terms = Vec::with_capacity(m + 1);
    for i in 0..=m {
        if i > 0 {
            log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(log_c - ln2n);
    }
    let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let tail = max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>();
    ((2.0 * tail).min(1.0), n, k)
}

/// Median (mean of the middle two for even counts); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().cloned().filter(|x| x.is_finite()).collect();
    crate::curves::median(&mut s)
}

/// (min, max); NaN when empty.
pub fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .filter(|x| x.is_finite())
        .fold((f64::NAN, f64::NAN), |(lo, hi), &x| {
            (
                if lo.is_nan() { x } else { lo.min(x) },
                if hi.is_nan() { x } else { hi.max(x) },
            )
        })
}

/// Seconds as m:ss (negative values keep their sign).
pub fn mmss(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "–".into();
    }
    let sign = if seconds < 0.0 { "-" } else { "" };
    let s = seconds.abs().round() as u64;
    format!("{sign}{}:{:02}", s / 60, s % 60)
}

/// Parses seconds ("95", "95.5") or minutes:seconds ("1:35", "01:35.5").
pub fn parse_time(text: &str) -> Option<f64> {
    let t = text.trim();
    if let Some((m, s)) = t.split_once(':') {
        let m: f64 = m.trim().parse().ok()?;
        let s: f64 = s.trim().parse().ok()?;
        (m >= 0.0 && (0.0..60.0).contains(&s)).then_some(m * 60.0 + s)
    } else {
        t.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(n: u64, k: u64) -> f64 {
        // Direct binomial sum with integers, for small n.
        let c = |n: u64, i: u64| -> f64 {
            (0..i).fold(1.0, |acc, j| acc * (n - j) as f64 / (j + 1) as f64)
        };
        let m = k.min(n - k);
        let tail: f64 = (0..=m).map(|i| c(n, i)).sum::<f64>() / 2f64.powi(n as i32);
        (2.0 * tail).min(1.0)
    }

    #[test]
    fn sign_test_matches_exact_binomial_values() {
        // n = 10, one of ten improves: 2 * (1 + 10) / 1024.
        let a = vec![0.5; 10];
        let mut b = vec![0.4; 10];
        b[0] = 0.6;
        let (p, n, k) = sign_test(&a, &b);
        assert_eq!((n, k), (10, 1));
        assert!((p - 22.0 / 1024.0).abs() < 1e-15);
        // All of 6 improve: 2 / 64.
        let (p, _, _) = sign_test(&[0.0; 6], &[1.0; 6]);
        assert!((p - 2.0 / 64.0).abs() < 1e-15);
        // Balanced: p = 1.
        let (p, _, _) = sign_test(&[0.0, 1.0], &[1.0, 0.0]);
        assert_eq!(p, 1.0);
        for n in 1..=25u64 {
            for k in 0..=n {
                let a = vec![0.0; n as usize];
                let b: Vec<f64> = (0..n).map(|i| if i < k { 1.0 } else { -1.0 }).collect();
                let (p, _, _) = sign_test(&a, &b);
                assert!((p - exact(n, k)).abs() < 1e-12, "n={n} k={k}");
            }
        }
    }

    #[test]
    fn ties_are_dropped() {
        // 3 ties, 5 untied of which 5 improve: n = 5, p = 2/32.
        let a = [0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1];
        let b = [0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9];
        let (p, n, k) = sign_test(&a, &b);
        assert_eq!((n, k), (5, 5));
        assert!((p - 2.0 / 32.0).abs() < 1e-15);
        assert_eq!(sign_test(&[0.3; 4], &[0.3; 4]), (1.0, 0, 0));
    }

    #[test]
    fn times_parse_and_print() {
        assert_eq!(parse_time("1:35"), Some(95.0));
        assert_eq!(parse_time(" 95 "), Some(95.0));
        assert_eq!(parse_time("1:75"), None);
        assert_eq!(parse_time("-3"), None);
        assert_eq!(mmss(95.4), "1:35");
        assert_eq!(mmss(-61.0), "-1:01");
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
