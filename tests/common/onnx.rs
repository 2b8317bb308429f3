//! Pieces of ONNX graphs for the tests that build their own models.

use tract_onnx::pb;

/// A float32 tensor type of `dims`: a size, or `-1` for a dynamic one
/// named `N`.
pub fn tensor_type(dims: &[i64]) -> Option<pb::TypeProto> {
    Some(pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: 1,
            shape: Some(pb::TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&d| pb::tensor_shape_proto::Dimension {
                        value: Some(if d < 0 {
                            pb::tensor_shape_proto::dimension::Value::DimParam("N".into())
                        } else {
                            pb::tensor_shape_proto::dimension::Value::DimValue(d)
                        }),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    })
}

/// A node `op` of `inputs` computing `output`, named `{op}_{output}`.
pub fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        ..Default::default()
    }
}

/// A float32 initializer of `dims` holding `values` as raw bytes.
pub fn weights(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A model of `graph` at IR version 8 and opset 17.
pub fn model(graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}
