//! The U-Net as a standard ONNX graph (opset 17), for ONNX Runtime, Triton
//! or MONAI Deploy: `delineate export --onnx MODEL.dlm OUT.onnx`.
//!
//! The graph mirrors `UNet::forward`: Conv (3×3×3, padding 1), strided
//! Conv (2×2×2), ConvTranspose (2×2×2), Add (residual and skip), Relu, the
//! 1×1×1 head and a Sigmoid: input `image` `[N, 1, z, y, x]` (float32, any
//! sizes that are multiples of 2^(levels − 1)), output `probability` of the
//! same shape. Group normalisation is Reshape `[N, G, −1]` →
//! InstanceNormalization (unit scale, zero bias) → Reshape back → Mul γ →
//! Add β, which is exact and runs in every ONNX runtime (opset 18's
//! GroupNormalization had per-group affine parameters until opset 21).
//!
//! The metadata carries what the network does not: `delineate.contract`
//! (the train/inference contract as JSON: orientation, spacing,
//! normalisation, window, lesion rule, operating threshold),
//! `delineate.network`, `delineate.training`, and
//! `delineate.preprocessing`, a sentence saying how to prepare an input.
//! Messages are the generated types of the `onnx-protobuf` crate.

use burn::module::Param;
use burn::nn::conv::{Conv3d, ConvTranspose3d};
use burn::nn::GroupNorm;
use burn::tensor::{backend::Backend, Tensor};
use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::modelfile::ModelInfo;
use crate::network::Network;
use crate::unet::{ResBlock, UNet};
use crate::Error;

/// The opset the graph is written for.
pub const OPSET: i64 = 17;
/// ONNX IR version of that opset (ONNX 1.12).
const IR_VERSION: i64 = 8;
const FLOAT: i32 = 1;
const INT64: i32 = 7;

struct Graph {
    nodes: Vec<NodeProto>,
    init: Vec<TensorProto>,
    n: usize,
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

fn values<B: Backend, const D: usize>(
    p: &Param<Tensor<B, D>>,
) -> Result<(Vec<f32>, Vec<i64>), Error> {
    let t = p.val();
    let dims = t.dims().iter().map(|&d| d as i64).collect();
    let v = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::Input(format!("cannot read a weight tensor: {e:?}")))?;
    Ok((v, dims))
}

impl Graph {
    fn fresh(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}_{}", self.n)
    }

    fn tensor(&mut self, prefix: &str, v: &[f32], dims: &[i64]) -> String {
        let name = self.fresh(prefix);
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.data_type = FLOAT;
        t.dims = dims.to_vec();
        t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.init.push(t);
        name
    }

    fn ints(&mut self, prefix: &str, v: &[i64]) -> String {
        let name = self.fresh(prefix);
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.data_type = INT64;
        t.dims = vec![v.len() as i64];
        t.int64_data = v.to_vec();
        self.init.push(t);
        name
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = format!("{out}_node");
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![out.clone()];
        n.attribute = attrs;
        self.nodes.push(n);
        out
    }

    fn conv<B: Backend>(
        &mut self,
        x: &str,
        c: &Conv3d<B>,
        k: i64,
        stride: i64,
        pad: i64,
    ) -> Result<String, Error> {
        let (w, wd) = values(&c.weight)?;
        let wn = self.tensor("w", &w, &wd);
        let mut inputs = vec![x.to_string(), wn];
        if let Some(b) = &c.bias {
            let (bv, bd) = values(b)?;
            inputs.push(self.tensor("b", &bv, &bd));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node(
            "Conv",
            &refs,
            vec![
                attr_ints("kernel_shape", &[k; 3]),
                attr_ints("strides", &[stride; 3]),
                attr_ints("pads", &[pad; 6]),
            ],
        ))
    }

    fn up<B: Backend>(&mut self, x: &str, c: &ConvTranspose3d<B>) -> Result<String, Error> {
        let (w, wd) = values(&c.weight)?;
        let wn = self.tensor("w", &w, &wd);
        let mut inputs = vec![x.to_string(), wn];
        if let Some(b) = &c.bias {
            let (bv, bd) = values(b)?;
            inputs.push(self.tensor("b", &bv, &bd));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node(
            "ConvTranspose",
            &refs,
            vec![
                attr_ints("kernel_shape", &[2; 3]),
                attr_ints("strides", &[2; 3]),
            ],
        ))
    }

    /// relu(group_norm(x)).
    fn gn_relu<B: Backend>(&mut self, x: &str, n: &GroupNorm<B>) -> Result<String, Error> {
        let (g, c) = (n.num_groups as i64, n.num_channels);
        let shape = self.node("Shape", &[x], vec![]);
        let grouped = self.ints("groups", &[0, g, -1]);
        let r = self.node("Reshape", &[x, &grouped], vec![]);
        let ones = self.tensor("one", &vec![1.0; g as usize], &[g]);
        let zeros = self.tensor("zero", &vec![0.0; g as usize], &[g]);
        let normed = self.node(
            "InstanceNormalization",
            &[&r, &ones, &zeros],
            vec![attr_float("epsilon", n.epsilon as f32)],
        );
        let back = self.node("Reshape", &[&normed, &shape], vec![]);
        let (gamma, beta) = match (&n.gamma, &n.beta) {
            (Some(a), Some(b)) => (values(a)?.0, values(b)?.0),
            _ => (vec![1.0; c], vec![0.0; c]),
        };
        let dims = [c as i64, 1, 1, 1];
        let gn = self.tensor("gamma", &gamma, &dims);
        let bn = self.tensor("beta", &beta, &dims);
        let scaled = self.node("Mul", &[&back, &gn], vec![]);
        let shifted = self.node("Add", &[&scaled, &bn], vec![]);
        Ok(self.node("Relu", &[&shifted], vec![]))
    }

    fn block<B: Backend>(&mut self, x: &str, b: &ResBlock<B>) -> Result<String, Error> {
        let t1 = self.gn_relu(x, &b.norm1)?;
        let h = self.conv(&t1, &b.conv1, 3, 1, 1)?;
        let t2 = self.gn_relu(&h, &b.norm2)?;
        let h = self.conv(&t2, &b.conv2, 3, 1, 1)?;
        Ok(self.node("Add", &[x, &h], vec![]))
    }
}

fn value_info(name: &str) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in ["batch", "channel", "z", "y", "x"] {
        let mut dim = tensor_shape_proto::Dimension::new();
        if d == "channel" {
            dim.set_dim_value(1);
        } else {
            dim.set_dim_param(d.into());
        }
        shape.dim.push(dim);
    }
    let mut t = type_proto::Tensor::new();
    t.elem_type = FLOAT;
    t.shape = protobuf::MessageField::some(shape);
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(t));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = protobuf::MessageField::some(ty);
    v
}

fn entry(key: &str, value: String) -> StringStringEntryProto {
    let mut e = StringStringEntryProto::new();
    e.key = key.into();
    e.value = value;
    e
}

/// The ONNX model of a U-Net model file's network, as bytes.
pub fn export<B: Backend>(
    net: &Network<B>,
    info: &ModelInfo,
    name: &str,
) -> Result<Vec<u8>, Error> {
    let Network::UNet(u) = net else {
        return Err(Error::Input(format!(
            "ONNX export covers the U-Net; this model is a {}",
            info.network.name()
        )));
    };
    let mut g = Graph {
        nodes: Vec::new(),
        init: Vec::new(),
        n: 0,
    };
    let out = forward(&mut g, u)?;
    let mut graph = GraphProto::new();
    graph.name = "delineate_unet3d".into();
    graph.node = g.nodes;
    graph.initializer = g.init;
    graph.input = vec![value_info("image")];
    // The last node's output is renamed to the graph's output.
    if let Some(last) = graph.node.last_mut() {
        last.output = vec!["probability".into()];
    }
    let _ = out;
    graph.output = vec![value_info("probability")];
    let mut model = ModelProto::new();
    model.ir_version = IR_VERSION;
    let mut op = OperatorSetIdProto::new();
    op.domain = String::new();
    op.version = OPSET;
    model.opset_import = vec![op];
    model.producer_name = "delineate".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    model.doc_string = format!(
        "Residual 3D U-Net of delineate ({name}): lesion probability per voxel of a contrast-enhanced T1 MRI. Research use only unless validated locally."
    );
    let json = |v: serde_json::Result<String>| v.map_err(|e| Error::Input(e.to_string()));
    model.metadata_props = vec![
        entry("delineate.contract", json(serde_json::to_string(&info.contract))?),
        entry("delineate.network", json(serde_json::to_string(&info.network))?),
        entry("delineate.training", json(serde_json::to_string(&info.training))?),
        entry("delineate.model", name.to_string()),
        entry(
            "delineate.preprocessing",
            "Reorient the image exactly to the contract's orientation, resample it to its spacing, z-score it over the head (voxels above 10 % of the 99th percentile) and clip to the contract's clip; feed windows of the contract's patch (Gaussian-weighted sliding windows, the contract's overlap); lesions are 26-connected components above the extent threshold, delivered when their maximum probability reaches the operating threshold (docs/inference.md).".into(),
        ),
    ];
    model.graph = protobuf::MessageField::some(graph);
    model
        .write_to_bytes()
        .map_err(|e| Error::Input(format!("cannot encode the ONNX model: {e}")))
}

fn forward<B: Backend>(g: &mut Graph, u: &UNet<B>) -> Result<String, Error> {
    let mut h = g.conv("image", &u.stem, 3, 1, 1)?;
    let mut skips = Vec::new();
    for (i, enc) in u.encoders.iter().enumerate() {
        h = g.block(&h, enc)?;
        if let Some(d) = u.downs.get(i) {
            skips.push(h.clone());
            h = g.conv(&h, d, 2, 2, 0)?;
        }
    }
    for i in (0..u.ups.len()).rev() {
        let skip = skips
            .pop()
            .ok_or_else(|| Error::Input("a U-Net with more ups than skips".into()))?;
        let up = g.up(&h, &u.ups[i])?;
        h = g.node("Add", &[&up, &skip], vec![]);
        h = g.block(&h, &u.decoders[i])?;
    }
    let t = g.gn_relu(&h, &u.head_norm)?;
    let logit = g.conv(&t, &u.head, 1, 1, 0)?;
    Ok(g.node("Sigmoid", &[&logit], vec![]))
}
