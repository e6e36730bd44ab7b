"""A tiny pure-Python PipelineTask and a butler repository for the BPS plugin tests (tests/test_bps_plugin.py).

``BtAddTask`` reads ``bt_in{in_tmpl}`` (a dict ``{"value": x}``) per (instrument, detector) and writes
``bt_in{out_tmpl}`` with ``value + addend``. Its config can make it fail (``failDetectors``, only while the file
``failIfExists`` exists, when set) or sleep (``sleepSeconds``), which the tests use for retries, restart and cancel.
"""

from __future__ import annotations

import os
import time

import lsst.pex.config as pexConfig
import lsst.pipe.base.connectionTypes as cT
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct

INSTRUMENT = "BT"
STORAGE = "StructuredDataDict"


class BtAddConnections(PipelineTaskConnections, dimensions=("instrument", "detector"),
                       defaultTemplates={"in_tmpl": "0", "out_tmpl": "1"}):
    input = cT.Input(name="bt_in{in_tmpl}", dimensions=["instrument", "detector"], storageClass=STORAGE,
                     doc="input value")
    output = cT.Output(name="bt_in{out_tmpl}", dimensions=["instrument", "detector"], storageClass=STORAGE,
                       doc="input value + addend")


class BtAddConfig(PipelineTaskConfig, pipelineConnections=BtAddConnections):
    addend = pexConfig.Field[int](doc="amount to add", default=1)
    failDetectors = pexConfig.ListField[int](doc="detectors whose quantum raises", default=[])
    failIfExists = pexConfig.Field[str](doc="fail only while this file exists (empty: always)", default="")
    sleepSeconds = pexConfig.Field[float](doc="sleep before computing", default=0.0)


class BtAddTask(PipelineTask):
    ConfigClass = BtAddConfig
    _DefaultName = "bt_add"

    def runQuantum(self, butlerQC, inputRefs, outputRefs):
        detector = butlerQC.quantum.dataId["detector"]
        if detector in self.config.failDetectors and (
                not self.config.failIfExists or os.path.exists(self.config.failIfExists)):
            raise RuntimeError(f"bt_add: configured to fail on detector {detector}")
        if self.config.sleepSeconds:
            time.sleep(self.config.sleepSeconds)
        inputs = butlerQC.get(inputRefs)
        butlerQC.put(self.run(**inputs), outputRefs)

    def run(self, input: dict) -> Struct:
        return Struct(output={"value": int(input["value"]) + self.config.addend})


def make_repo(root: str, detectors=(0, 1), run: str = "bt/inputs") -> None:
    """A new butler repository with instrument BT, ``detectors`` and one ``bt_in0`` dataset per detector."""
    from lsst.daf.butler import Butler, DatasetType

    Butler.makeRepo(root)
    butler = Butler.from_config(root, writeable=True, run=run)
    butler.registry.insertDimensionData("instrument", {"name": INSTRUMENT, "detector_max": 100})
    for d in detectors:
        butler.registry.insertDimensionData("detector", {"instrument": INSTRUMENT, "id": d, "full_name": f"d{d}"})
    dt = DatasetType("bt_in0", ("instrument", "detector"), STORAGE, universe=butler.dimensions)
    butler.registry.registerDatasetType(dt)
    for d in detectors:
        butler.put({"value": 10 * d}, "bt_in0", instrument=INSTRUMENT, detector=d)


def pipeline_yaml(steps: int = 2, step1_config: dict | None = None) -> str:
    """A pipeline of ``steps`` chained BtAddTasks (step1 reads bt_in0, step2 reads step1's output, ...)."""
    lines = ["description: userbatch BPS plugin test", "tasks:"]
    for i in range(1, steps + 1):
        lines += [f"  step{i}:", "    class: bps_test_tasks.BtAddTask", "    config:",
                  f"      connections.in_tmpl: '{i - 1}'", f"      connections.out_tmpl: '{i}'"]
        for key, value in ((step1_config or {}) if i == 1 else {}).items():
            lines.append(f"      {key}: {value!r}" if isinstance(value, str) else f"      {key}: {value}")
    return "\n".join(lines) + "\n"
