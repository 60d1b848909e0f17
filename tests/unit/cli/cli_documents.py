"""Documents the CLI tests write into a folder for `vram-operator plan/render -f`."""

# A GpuNode with one idle NVIDIA L4.
L4_NODE = """
apiVersion: vram.dev/v1alpha1
kind: GpuNode
metadata: {name: n1}
status:
  gpus:
    - {index: 0, uuid: GPU-a, name: NVIDIA L4, memoryTotalMiB: 23034, memoryUsedMiB: 0, memoryFreeMiB: 23034}
"""
