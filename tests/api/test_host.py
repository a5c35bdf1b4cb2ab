"""segloop.api.host: the host facts of ``/api/v1/system/status`` and ``/gpu``."""

from __future__ import annotations

from segloop.api.host import gpu_info, host_info


def test_host_info_reads_this_host() -> None:
    info = host_info()
    assert info.memory_total_bytes >= info.memory_available_bytes > 0
    assert info.process_rss_bytes > 0 and len(info.load_average) == 3


def test_gpu_info_is_a_list_of_gpu_records() -> None:
    for g in gpu_info():  # [] on a machine without nvidia-smi
        assert g.memory_total_mib >= g.memory_used_mib >= 0
