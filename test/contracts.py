"""Input contracts for the networks the tests build in code (a trained model file brings its own)."""

from mtl_perception.model.contract import FlowContract, InputContract, contract_for


def contract_of(model, size=(384, 768), **flow) -> InputContract:
    """The contract of ``model`` (a network or its config) trained on flow made at ``size`` with the
    project's defaults, each ``flow`` keyword (farneback, confidence, partner_gap, ...) replacing one."""
    config = getattr(model, "config", model)
    return contract_for(config, FlowContract(size=tuple(size), **flow))


def flow_overrides(params) -> dict:
    """PipelineConfig keywords that set every Farnebäck parameter of ``params`` (overriding the model's)."""
    from mtl_perception.flow import OPTFLOW_FARNEBACK_GAUSSIAN
    from mtl_perception.pipeline_config import FARNEBACK_FIELDS

    fields = {f"flow_{name}": getattr(params, name) for name in FARNEBACK_FIELDS}
    return {**fields, "flow_gaussian": bool(params.flags & OPTFLOW_FARNEBACK_GAUSSIAN)}
