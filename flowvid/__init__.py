"""flowvid: video synthesis with frame-insertion flow matching.

Submodules are imported on use (flowvid.flow, flowvid.config, ...) so that importing the
package, and the `flowvid` command, stay fast.
"""
__version__ = "0.1.0"
