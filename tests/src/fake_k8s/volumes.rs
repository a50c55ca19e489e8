//! Pod volumes as host directories: emptyDir, configMap projections, PVCs, the S3 CSI PV.

use std::path::PathBuf;

use serde_json::Value;

use super::store::{Key, Shared, State};
use crate::mountpoint::MountOptions;

/// Host directory behind a pod volume (with the PV's mount options for an S3 CSI volume), or an
/// error like the kubelet's when its source is missing.
pub(super) fn volume_dir(
    shared: &Shared,
    st: &State,
    key: &Key,
    pod: &Value,
    volume: &str,
) -> Result<(PathBuf, Option<MountOptions>), String> {
    let v = pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == volume))
        .ok_or_else(|| format!("volume {volume:?} not found"))?;
    if v.get("emptyDir").is_some() {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("pod");
        return Ok((shared.root.join("pods").join(uid).join(volume), None));
    }
    if let Some(cm) = v["configMap"]["name"].as_str() {
        // The kubelet projects each key as a file (read-only in the pod; a copy per pod here).
        let obj = st
            .objects
            .get(&("configmaps", key.1.clone(), cm.to_owned()))
            .ok_or_else(|| format!("configmap \"{cm}\" not found"))?;
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("pod");
        let dir = shared.root.join("pods").join(uid).join(volume);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (k, v) in obj["data"].as_object().into_iter().flatten() {
            std::fs::write(dir.join(k), v.as_str().unwrap_or_default())
                .map_err(|e| e.to_string())?;
        }
        return Ok((dir, None));
    }
    let claim = v["persistentVolumeClaim"]["claimName"]
        .as_str()
        .ok_or_else(|| format!("volume {volume:?} has an unsupported source"))?;
    let pvc = st
        .objects
        .get(&("persistentvolumeclaims", key.1.clone(), claim.to_owned()))
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let pv_name = pvc["spec"]["volumeName"].as_str().unwrap_or("");
    if pv_name.is_empty() && pvc["spec"]["storageClassName"].is_string() {
        // Dynamic provisioning (a local-path provisioner): one directory per claim.
        return Ok((
            shared.root.join("provisioned").join(&key.1).join(claim),
            None,
        ));
    }
    let pv = st
        .objects
        .get(&("persistentvolumes", String::new(), pv_name.to_owned()))
        .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
    let bucket = pv["spec"]["csi"]["volumeAttributes"]["bucketName"]
        .as_str()
        .unwrap_or("bucket");
    let options = || {
        pv["spec"]["mountOptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    };
    let prefix = options()
        .find_map(|o| o.strip_prefix("prefix "))
        .unwrap_or("");
    let rules =
        (pv["spec"]["csi"]["driver"] == "s3.csi.aws.com").then(|| MountOptions::from_pv(options()));
    Ok((shared.root.join("s3").join(bucket).join(prefix), rules))
}
