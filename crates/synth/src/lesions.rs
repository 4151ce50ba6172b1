//! Lesion placement and appearance: metastases, meningiomas and vestibular
//! schwannomas, drawn in case space.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Poisson, StandardNormal};
use serde::Serialize;

use crate::deform::{CaseMap, MassEffect};
use crate::params::{Kind, MetCount, SynthParams};
use crate::sample::{add, dot, norm, normalize, scale, sub, WorldToIndex, V3};
use crate::shapes::Shape;
use crate::template::{Region, Template};

/// Metastases above this diameter may be ring-enhancing (necrotic core).
pub const RING_MIN_DIAMETER_MM: f64 = 10.0;
/// Smallest gap kept between two lesion surfaces, so that each lesion is
/// its own connected component in the truth.
pub const MIN_GAP_MM: f64 = 3.0;

/// Intensity inside a lesion, relative to white matter: a rim of `rim_mm`
/// at `rim`, and `core` deeper (equal for solid lesions).
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub rim_mm: f64,
    pub rim: f64,
    pub core: f64,
}

impl Profile {
    pub fn solid(v: f64) -> Self {
        Self {
            rim_mm: 0.0,
            rim: v,
            core: v,
        }
    }

    /// Intensity at signed distance `sd` (< 0 inside).
    pub fn at(&self, sd: f64) -> f64 {
        if self.rim_mm <= 0.0 {
            return self.rim;
        }
        let t = ((-sd - self.rim_mm) + 0.5).clamp(0.0, 1.0);
        self.rim + t * (self.core - self.rim)
    }
}

/// Dural tail of a meningioma: enhancement of the dura around its base,
/// fading from `inner` to `outer` mm from the attachment centre.
#[derive(Clone, Debug, Serialize)]
pub struct Tail {
    pub center: V3,
    pub inner: f64,
    pub outer: f64,
    pub amplitude: f64,
}

/// Vasogenic oedema: T1 darkening of white matter around a metastasis.
#[derive(Clone, Debug, Serialize)]
pub struct Oedema {
    pub shape: Shape,
    /// Fractional intensity drop of white matter inside.
    pub strength: f64,
}

/// Heterogeneous enhancement: the profile's intensity times `1 + a·n(x)`,
/// n a smooth random field (a sum of plane waves of 2.5–8 mm wavelength,
/// variance 1), so that a lesion is not a uniform disk.
#[derive(Clone, Debug, Serialize)]
pub struct Texture {
    pub amplitude: f64,
    /// (unit direction, wave number rad/mm, phase).
    pub waves: Vec<(V3, f64, f64)>,
}

impl Texture {
    pub fn draw(rng: &mut ChaCha8Rng, amplitude: [f64; 2]) -> Self {
        let a = if amplitude[1] > amplitude[0] {
            rng.random_range(amplitude[0]..=amplitude[1])
        } else {
            amplitude[0]
        };
        let waves = (0..6)
            .map(|_| {
                let d = normalize([0; 3].map(|_| rng.random_range(-1.0..1.0)));
                let wavelength: f64 = rng.random_range(2.5..8.0);
                (
                    d,
                    2.0 * std::f64::consts::PI / wavelength,
                    rng.random_range(0.0..std::f64::consts::TAU),
                )
            })
            .collect();
        Self {
            amplitude: a,
            waves,
        }
    }

    /// The intensity factor at `x` (never below 0.3).
    pub fn factor(&self, x: V3) -> f64 {
        let n = self.waves.len().max(1) as f64;
        let v: f64 = self
            .waves
            .iter()
            .map(|(d, k, ph)| (k * dot(*d, x) + ph).sin())
            .sum::<f64>()
            * (2.0 / n).sqrt();
        (1.0 + self.amplitude * v).max(0.3)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Lesion {
    pub kind: Kind,
    pub region: Region,
    pub nominal_diameter_mm: f64,
    pub appearance: &'static str,
    pub shape: Shape,
    pub profile: Profile,
    pub oedema: Option<Oedema>,
    pub tail: Option<Tail>,
    /// Heterogeneous enhancement (domain randomisation only).
    pub texture: Option<Texture>,
}

/// The lesions of one case, and what was asked for.
pub struct Plan {
    pub kind: Option<Kind>,
    pub requested: usize,
    pub lesions: Vec<Lesion>,
    pub warnings: Vec<String>,
}

fn log_uniform(rng: &mut ChaCha8Rng, r: [f64; 2]) -> f64 {
    let (a, b) = (r[0].max(0.1), r[1].max(r[0].max(0.1)));
    if b <= a {
        return a;
    }
    (rng.random_range(a.ln()..=b.ln())).exp()
}

fn unit(rng: &mut ChaCha8Rng) -> V3 {
    normalize([0; 3].map(|_| StandardNormal.sample(&mut *rng)))
}

/// A uniformly random rotation (rows are the new axes).
fn random_rotation(rng: &mut ChaCha8Rng) -> [[f64; 3]; 3] {
    let a = unit(rng);
    let mut b = unit(rng);
    b = normalize(sub(b, scale(a, dot(a, b))));
    let c = cross(a, b);
    [a, b, c]
}

fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Rotation whose third row is `n`.
fn frame_with(n: V3, rng: &mut ChaCha8Rng) -> [[f64; 3]; 3] {
    let n = normalize(n);
    let mut a = unit(rng);
    a = sub(a, scale(n, dot(a, n)));
    if norm(a) < 1e-6 {
        a = if n[0].abs() < 0.9 {
            [1.0, 0.0, 0.0]
        } else {
            [0.0, 1.0, 0.0]
        };
        a = sub(a, scale(n, dot(a, n)));
    }
    let a = normalize(a);
    [a, cross(n, a), n]
}

fn lobulated(rng: &mut ChaCha8Rng, center: V3, radius: f64, jitter: f64, lobe: f64) -> Shape {
    let radii = [0; 3].map(|_| radius * (1.0 + rng.random_range(-jitter..=jitter)));
    let lobes = (0..2)
        .map(|_| (unit(rng), rng.random_range(-lobe..=lobe)))
        .collect();
    Shape::Blob {
        center,
        axes: random_rotation(rng),
        radii,
        lobes,
    }
}

/// Directions for the "does it fit inside the brain" test.
fn probe_dirs() -> Vec<V3> {
    let mut v = Vec::new();
    for i in -1i32..=1 {
        for j in -1i32..=1 {
            for k in -1i32..=1 {
                if (i, j, k) != (0, 0, 0) {
                    v.push(normalize([i as f64, j as f64, k as f64]));
                }
            }
        }
    }
    v
}

/// Draws the case's lesions and adds their mass effect to `map`.
pub fn plan_lesions(
    rng: &mut ChaCha8Rng,
    p: &SynthParams,
    t: &Template,
    map: &mut CaseMap,
) -> Plan {
    let weights: Vec<(Kind, f64)> = [Kind::Metastasis, Kind::Meningioma, Kind::Schwannoma]
        .into_iter()
        .zip(p.kind_weights)
        .filter(|(k, w)| p.kinds.contains(k) && *w > 0.0)
        .collect();
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    let mut plan = Plan {
        kind: None,
        requested: 0,
        lesions: Vec::new(),
        warnings: Vec::new(),
    };
    if weights.is_empty() || total <= 0.0 {
        return plan;
    }
    let mut x = rng.random_range(0.0..total);
    let mut kind = weights[0].0;
    for (k, w) in &weights {
        if x < *w {
            kind = *k;
            break;
        }
        x -= w;
    }
    plan.kind = Some(kind);
    let w2i = WorldToIndex::new(t.brain_soft.geometry());
    let brain_at = |m: &CaseMap, x: V3| w2i.linear(&t.brain_soft, m.to_template(x), 0.0) as f64;
    let hull_at = |m: &CaseMap, x: V3| w2i.linear(&t.hull_soft, m.to_template(x), 0.0) as f64;
    match kind {
        Kind::Metastasis => {
            let n = match p.met_count {
                MetCount::Range { min, max } => rng.random_range(min..=max.max(min)) as usize,
                MetCount::NegBinomial { mean, k, max } => {
                    let lambda = Gamma::new(k.max(1e-3), mean.max(1e-6) / k.max(1e-3))
                        .map(|g| g.sample(&mut *rng))
                        .unwrap_or(mean);
                    let n = Poisson::new(lambda.max(1e-9))
                        .map(|d| d.sample(&mut *rng))
                        .unwrap_or(0.0) as u32;
                    n.min(max) as usize
                }
            };
            plan.requested = n;
            for _ in 0..n {
                if let Some(l) = place_met(rng, p, t, map, &plan.lesions, &brain_at) {
                    plan.lesions.push(l);
                } else {
                    plan.warnings.push(
                        "a metastasis found no free place in the brain and was left out".into(),
                    );
                }
            }
        }
        Kind::Meningioma => {
            plan.requested = 1;
            let l = place_meningioma(rng, p, t, map, &hull_at);
            map.masses.push(MassEffect {
                center: l.1,
                radius: l.2,
                normal: Some(l.3),
            });
            plan.lesions.push(l.0);
        }
        Kind::Schwannoma => {
            plan.requested = 1;
            let (l, c, r) = place_schwannoma(rng, p, t, map);
            if r > 0.0 {
                map.masses.push(MassEffect {
                    center: c,
                    radius: r,
                    normal: None,
                });
            }
            plan.lesions.push(l);
        }
    }
    plan
}

fn place_met(
    rng: &mut ChaCha8Rng,
    p: &SynthParams,
    t: &Template,
    map: &CaseMap,
    others: &[Lesion],
    brain_at: &dyn Fn(&CaseMap, V3) -> f64,
) -> Option<Lesion> {
    let dirs = probe_dirs();
    let total: f64 = p.met_region_weights.iter().sum();
    let mut d = log_uniform(rng, p.met_diameter_mm);
    for attempt in 0..60 {
        if attempt > 0 && attempt % 20 == 0 {
            d = (d * 0.8).max(p.met_diameter_mm[0]);
        }
        let mut x = rng.random_range(0.0..total.max(1e-9));
        let mut r_idx = 0;
        for (i, w) in p.met_region_weights.iter().enumerate() {
            if x < *w {
                r_idx = i;
                break;
            }
            x -= w;
        }
        let pool = if t.junction[r_idx].is_empty() {
            &t.junction[0]
        } else {
            &t.junction[r_idx]
        };
        let seed = pool[rng.random_range(0..pool.len())];
        let c = map.to_case(seed);
        let r = d / 2.0;
        let reach = r * 1.15 + 0.5;
        if dirs
            .iter()
            .any(|u| brain_at(map, add(c, scale(*u, reach))) < 0.5)
        {
            continue;
        }
        if others.iter().any(|o| {
            let (lo, hi) = o.shape.bounds();
            let oc = scale(add(lo, hi), 0.5);
            let or = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(hi[2] - lo[2]) / 2.0;
            norm(sub(oc, c)) < or + reach + MIN_GAP_MM
        }) {
            continue;
        }
        let lobe = if d > 8.0 { 0.12 } else { 0.05 };
        let shape = lobulated(rng, c, r, 0.15, lobe);
        let ring = d >= RING_MIN_DIAMETER_MM && rng.random_bool(if d > 20.0 { 0.85 } else { 0.6 });
        let profile = if ring {
            Profile {
                rim_mm: rng.random_range(2.0..4.0f64).min(0.4 * r),
                rim: rng.random_range(1.4..1.9),
                core: rng.random_range(0.4..0.7),
            }
        } else {
            Profile::solid(rng.random_range(1.3..1.9))
        };
        let oedema_r = r * rng.random_range(1.6..2.6);
        let oedema = (d >= 5.0).then(|| Oedema {
            shape: lobulated(rng, c, oedema_r, 0.2, 0.15),
            strength: rng.random_range(0.08..0.25),
        });
        return Some(Lesion {
            kind: Kind::Metastasis,
            region: t.frame.region(seed),
            nominal_diameter_mm: d,
            appearance: if ring { "ring" } else { "solid" },
            shape,
            profile,
            oedema,
            tail: None,
            texture: None,
        });
    }
    None
}

/// Returns the lesion, its dural attachment centre, height and inward normal.
fn place_meningioma(
    rng: &mut ChaCha8Rng,
    p: &SynthParams,
    t: &Template,
    map: &CaseMap,
    hull_at: &dyn Fn(&CaseMap, V3) -> f64,
) -> (Lesion, V3, f64, V3) {
    // Mostly supratentorial: convexity, falx, skull base; few in the
    // posterior fossa.
    let mut seed = t.dura[rng.random_range(0..t.dura.len())];
    for _ in 0..20 {
        if t.frame.to_mni(seed)[2] > -30.0 || rng.random_bool(0.1) {
            break;
        }
        seed = t.dura[rng.random_range(0..t.dura.len())];
    }
    let c = map.to_case(seed);
    let g = [0, 1, 2].map(|a| {
        let mut hi = c;
        let mut lo = c;
        hi[a] += 2.0;
        lo[a] -= 2.0;
        hull_at(map, hi) - hull_at(map, lo)
    });
    let n = if norm(g) > 1e-6 {
        normalize(g)
    } else {
        normalize(sub(map.to_case(t.center), c))
    };
    let d = rng.random_range(p.men_diameter_mm[0]..=p.men_diameter_mm[1].max(p.men_diameter_mm[0]));
    let base = d / 2.0 * rng.random_range(1.0..1.2);
    let height = d / 2.0 * rng.random_range(0.7..1.0);
    let axes = frame_with(n, rng);
    let center = sub(c, scale(n, 0.15 * height));
    let lobes = (0..2)
        .map(|_| (unit(rng), rng.random_range(-0.06..=0.06)))
        .collect();
    let shape = Shape::Dome {
        blob: Box::new(Shape::Blob {
            center,
            axes,
            radii: [base, base * rng.random_range(0.85..1.0), height],
            lobes,
        }),
        center: c,
        normal: n,
        offset: 1.5,
    };
    let tail = Tail {
        center: c,
        inner: base * 0.8,
        outer: base + rng.random_range(8.0..18.0),
        amplitude: rng.random_range(0.5..0.9),
    };
    let lesion = Lesion {
        kind: Kind::Meningioma,
        region: t.frame.region(seed),
        nominal_diameter_mm: d,
        appearance: "homogeneous",
        shape,
        profile: Profile::solid(rng.random_range(1.5..2.0)),
        oedema: None,
        tail: Some(tail),
        texture: None,
    };
    (lesion, c, height * 0.85, n)
}

/// Vestibular schwannoma: a tube in the internal auditory canal and, above
/// about 8 mm, a ball in the cerebellopontine angle ("ice-cream cone").
/// Returns the lesion and its mass-effect centre and radius.
fn place_schwannoma(
    rng: &mut ChaCha8Rng,
    p: &SynthParams,
    t: &Template,
    map: &CaseMap,
) -> (Lesion, V3, f64) {
    let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    // MNI mm: fundus (lateral end) and porus (medial opening) of the canal.
    let fundus = map.to_case(t.frame.from_mni([side * 37.0, -22.0, -30.0]));
    let porus = map.to_case(t.frame.from_mni([side * 24.0, -26.0, -32.0]));
    let d = log_uniform(rng, p.schw_diameter_mm);
    let canal = Shape::Tube {
        points: vec![fundus, porus],
        radii: vec![1.6, 2.4],
    };
    let (shape, mass_c, mass_r) = if d < 8.0 {
        (canal, porus, 0.0)
    } else {
        let r = d / 2.0;
        // The cisternal part grows medially and backwards from the porus.
        let inward = normalize(sub(porus, fundus));
        let back = [0.0, 1.0, 0.0];
        let dir = normalize(add(inward, scale(back, 0.5)));
        let c = add(porus, scale(dir, r * 0.75));
        let ball = lobulated(rng, c, r, 0.1, 0.06);
        (Shape::Union(vec![canal, ball]), c, r * 0.8)
    };
    let cystic = d > 20.0 && rng.random_bool(0.4);
    let profile = if cystic {
        Profile {
            rim_mm: rng.random_range(3.0..5.0),
            rim: rng.random_range(1.3..1.8),
            core: rng.random_range(0.5..0.8),
        }
    } else {
        Profile::solid(rng.random_range(1.3..1.8))
    };
    let lesion = Lesion {
        kind: Kind::Schwannoma,
        region: Region::Cerebellum,
        nominal_diameter_mm: d,
        appearance: if cystic { "cystic" } else { "solid" },
        shape,
        profile,
        oedema: None,
        tail: None,
        texture: None,
    };
    (lesion, mass_c, mass_r)
}
