//! # Device facts: cudarc for the device, NVML for the board
//!
//! Everything here degrades to "not available" without a driver; nothing panics.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};

/// What `trinity info` prints, and what results record about the machine.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DeviceInfo {
    /// Device name (`None` without a GPU).
    pub name: Option<String>,
    /// Compute capability, e.g. "9.0".
    pub compute_capability: Option<String>,
    /// PTX architecture the CUDA backend loads.
    pub ptx_arch: Option<String>,
    /// Total device memory, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Used device memory, bytes (NVML).
    pub memory_used_bytes: Option<u64>,
    /// NVIDIA driver version (NVML).
    pub driver_version: Option<String>,
    /// CUDA version the driver supports (NVML), e.g. "13.0".
    pub cuda_driver_version: Option<String>,
    /// Power draw now, watts (NVML).
    pub power_watts: Option<f64>,
    /// Enforced power limit, watts (NVML).
    pub power_limit_watts: Option<f64>,
    /// GPU temperature, °C (NVML).
    pub temperature_c: Option<u32>,
    /// SM clock now, MHz (NVML).
    pub sm_clock_mhz: Option<u32>,
    /// Why the GPU is unavailable, when it is.
    pub unavailable: Option<String>,
    /// The device's UUID as CUDA reports it (NVML is matched to it).
    #[serde(default)]
    pub uuid: Option<String>,
    /// L2 cache size, bytes.
    #[serde(default)]
    pub l2_bytes: Option<u64>,
}

/// Gathers device facts for GPU `ordinal`.
pub fn gather(ordinal: usize) -> DeviceInfo {
    let mut info = DeviceInfo::default();
    match crate::cuda::CudaBackend::new(ordinal) {
        Ok(gpu) => {
            info.name = Some(gpu.device_name().to_owned());
            let (ma, mi) = gpu.compute_capability();
            info.compute_capability = Some(format!("{ma}.{mi}"));
            info.ptx_arch = Some(gpu.arch().to_owned());
            info.memory_total_bytes = gpu.context().total_mem().ok().map(|b| b as u64);
            info.uuid = Some(gpu.uuid().to_owned());
            info.l2_bytes = Some(gpu.l2_bytes() as u64);
        }
        Err(e) => info.unavailable = Some(e.to_string()),
    }
    if let Ok(nvml) = Nvml::init() {
        info.driver_version = nvml.sys_driver_version().ok();
        info.cuda_driver_version =
            nvml.sys_cuda_driver_version().ok().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
        // The board CUDA opened, by UUID (NVML's index order differs from CUDA's);
        // by index only when CUDA itself could not open the device.
        let dev = match &info.uuid {
            Some(uuid) => nvml.device_by_uuid(uuid.as_str()),
            None => nvml.device_by_index(ordinal as u32),
        };
        if let Ok(dev) = dev {
            info.name = info.name.or_else(|| dev.name().ok());
            if let Ok(m) = dev.memory_info() {
                info.memory_total_bytes = info.memory_total_bytes.or(Some(m.total));
                info.memory_used_bytes = Some(m.used);
            }
            info.power_watts = dev.power_usage().ok().map(|mw| mw as f64 / 1e3);
            info.power_limit_watts = dev.enforced_power_limit().ok().map(|mw| mw as f64 / 1e3);
            info.temperature_c = dev.temperature(TemperatureSensor::Gpu).ok();
            info.sm_clock_mhz = dev.clock_info(Clock::SM).ok();
        }
    }
    info
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.unavailable {
            writeln!(f, "GPU: not available: {why}")?;
        }
        let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
        let rows: [(&str, Option<String>); 13] = [
            ("device", self.name.clone()),
            ("UUID", self.uuid.clone()),
            ("L2", self.l2_bytes.map(|b| format!("{:.0} MB", b as f64 / 1e6))),
            ("compute capability", self.compute_capability.clone()),
            ("PTX loaded", self.ptx_arch.clone()),
            ("memory total", self.memory_total_bytes.map(gib)),
            ("memory used", self.memory_used_bytes.map(gib)),
            ("driver", self.driver_version.clone()),
            ("CUDA (driver)", self.cuda_driver_version.clone()),
            ("power", self.power_watts.map(|w| format!("{w:.1} W"))),
            ("power limit", self.power_limit_watts.map(|w| format!("{w:.0} W"))),
            ("temperature", self.temperature_c.map(|t| format!("{t} °C"))),
            ("SM clock", self.sm_clock_mhz.map(|c| format!("{c} MHz"))),
        ];
        for (k, v) in rows.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))) {
            writeln!(f, "{k:>20}: {v}")?;
        }
        Ok(())
    }
}
