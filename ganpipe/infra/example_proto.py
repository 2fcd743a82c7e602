"""``tf.train.Example`` for the Beam workers, without importing TensorFlow.

TensorFlow's own ``example_pb2`` lives inside the ``tensorflow`` package, and importing it runs
``tensorflow/__init__`` (about 7 s and 1 GB per process). Every Beam worker that unpickles a data
step's DoFn would pay that: the multi_processing and portable runners start fresh worker
processes per pipeline, as Dataflow, Flink and Spark do. The wire format is fixed by the field
numbers and types of ``tensorflow/core/example/{example,feature}.proto`` (TF 2.x, proto3), declared
here in a private descriptor pool, so the bytes are the same as TensorFlow's for the same content
and TensorFlow in the same process keeps its own classes (no clash in the default pool).
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, *, repeated: bool = False, type_name: str = "",
           oneof: int | None = None) -> descriptor_pb2.FieldDescriptorProto:
    field = _F(name=name, number=number, type=kind, json_name=name,
               label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="ganpipe/tf_example.proto", package="tensorflow", syntax="proto3")
    file.message_type.add(name="BytesList").field.append(_field("value", 1, _F.TYPE_BYTES, repeated=True))
    file.message_type.add(name="FloatList").field.append(_field("value", 1, _F.TYPE_FLOAT, repeated=True))
    file.message_type.add(name="Int64List").field.append(_field("value", 1, _F.TYPE_INT64, repeated=True))
    feature = file.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in enumerate(("bytes_list", "float_list", "int64_list"), start=1):
        kind = "".join(part.title() for part in name.split("_"))  # bytes_list -> BytesList
        feature.field.append(_field(name, number, _F.TYPE_MESSAGE, type_name=f".tensorflow.{kind}", oneof=0))
    features = file.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.extend([_field("key", 1, _F.TYPE_STRING),
                        _field("value", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.Feature")])
    features.field.append(_field("feature", 1, _F.TYPE_MESSAGE, repeated=True,
                                 type_name=".tensorflow.Features.FeatureEntry"))
    file.message_type.add(name="Example").field.append(
        _field("features", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features"))
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Example"))
