#!/usr/bin/env python3
"""make-topology-xml.py: writes an hwloc XML topology for `commons-agent --topology`
from an hwloc synthetic description, with GPUs added as PCI devices (NVIDIA 3D
controllers with a CUDA OS device) under one host bridge per package, so each GPU is
local to that package's NUMA node. Used to make configs/topologies/*.xml.

usage: make-topology-xml.py "pack:2 numa:1 core:56 pu:1" GPUS_PER_PACKAGE MODEL OUT.xml
       [--numa-gb N]   (memory of each NUMA node, default 256)
"""
import argparse
import subprocess
import sys
import xml.etree.ElementTree as ET


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("synthetic")
    ap.add_argument("gpus_per_package", type=int)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--numa-gb", type=int, default=256)
    a = ap.parse_args()
    xml = subprocess.run(["lstopo-no-graphics", "--input", a.synthetic, "--of", "xml", "-"],
                         check=True, capture_output=True, text=True).stdout
    root = ET.fromstring(xml.split("\n", 2)[2])  # drop the XML declaration and DOCTYPE
    machine = root.find("object")
    for info in list(machine.findall("info")):
        if info.get("name") in ("ProcessName", "Backend", "SyntheticDescription"):
            machine.remove(info)
    # hwloc wants an object's info elements before its children.
    machine.insert(len(machine.findall("info")),
                   ET.Element("info", name="CommonsDescription",
                              value=f"{a.synthetic} + {a.gpus_per_package} GPU(s) per package"))
    gp, gpu = 10000, 0
    for node in machine.iter("object"):
        if node.get("type") == "NUMANode":
            node.set("local_memory", str(a.numa_gb << 30))
            for pt in node.findall("page_type"):
                pt.set("count", str((a.numa_gb << 30) // int(pt.get("size"))))
    for pkg_index, pkg in enumerate(o for o in machine.findall("object") if o.get("type") == "Package"):
        bus0 = 0x10 + 0x40 * pkg_index
        bridge = ET.SubElement(pkg, "object", type="Bridge", gp_index=str(gp), bridge_type="0-1",
                               depth="0", bridge_pci=f"0000:[{bus0:02x}-{bus0 + 0x3f:02x}]")
        gp += 1
        for k in range(a.gpus_per_package):
            bus = bus0 + 1 + k
            dev = ET.SubElement(bridge, "object", type="PCIDev", gp_index=str(gp),
                                pci_busid=f"0000:{bus:02x}:00.0",
                                pci_type="0302 [10de:20b2] [10de:1463] a1 00",
                                pci_link_speed="31.507692")
            gp += 1
            ET.SubElement(dev, "info", name="PCIVendor", value="NVIDIA Corporation")
            ET.SubElement(dev, "info", name="PCIDevice", value=a.model)
            osdev = ET.SubElement(dev, "object", type="OSDev", gp_index=str(gp), name=f"cuda{gpu}",
                                  subtype="CUDA", osdev_type="5")
            gp += 1
            ET.SubElement(osdev, "info", name="Backend", value="CUDA")
            ET.SubElement(osdev, "info", name="GPUVendor", value="NVIDIA Corporation")
            ET.SubElement(osdev, "info", name="GPUModel", value=a.model)
            gpu += 1
    ET.indent(root, space="  ")
    with open(a.out, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE topology SYSTEM "hwloc2.dtd">\n')
        f.write(ET.tostring(root, encoding="unicode"))
        f.write("\n")
    check = subprocess.run(["lstopo-no-graphics", "--input", a.out, "--of", "console"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"{a.out}: hwloc cannot load it: {check.stderr}")


if __name__ == "__main__":
    main()
