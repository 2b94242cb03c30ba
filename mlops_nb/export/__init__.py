"""Other engines for the same compiled pipeline: Kubeflow Pipelines v2 (and Vertex AI).

The pipeline spec that feeds dvc.yaml and pipeline.yaml is planned into one KFP component per
step (`plan`), rendered as Python source (`source`), compiled by the kfp SDK into the KFP v2
IR YAML (`build`), and run here by kfp.local or submitted to a cluster (`local`). Inside a
pod, `component` runs the embedded step notebook through mlops_nb's own step execution.
The kfp SDK is an optional extra (`mlops_nb[kfp]`): only `build` and `local` import it.
The model for the edge: `onnx_convert` turns a registered scikit-learn model into ONNX and
`onnx_export` checks it against the model and records it (the extra `mlops_nb[onnx]`).
"""
