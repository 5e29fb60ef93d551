"""kqi's tables, one module per domain; every table's name is importable from here.

The core (tenants, users, nodes, jobs) is kqi/models/core.py; each other module adds the tables of
one domain. Importing this package registers them all with SQLAlchemy, in dependency order."""
from kqi.models.admin import AuditEvent, Notification, NotificationPreference, SiteSetting, UsageRecord
from kqi.models.core import (
                             ApiToken,
                             GpuAllocation,
                             Job,
                             JobPart,
                             JobStatus,
                             Membership,
                             Node,
                             Role,
                             Tenant,
                             User,
                             utcnow,
)
from kqi.models.dashboard import ClusterSample
from kqi.models.data import (
                             Data,
                             DataFile,
                             Dataset,
                             DatasetEntry,
                             GitServer,
                             GitToken,
                             JobAttachment,
                             JobParent,
                             JobSource,
                             Registry,
                             RegistryCredential,
)
from kqi.models.nodes import Lease, NodeCacheEntry, NodeEvent, NodeGpu
from kqi.models.preprocessing import Preprocessing, PreprocessingOutput, PreprocessingRun
from kqi.models.runs import JobEvent, JobFavorite, JobTag
from kqi.models.services import ServiceRun

__all__ = ["ApiToken", "AuditEvent", "ClusterSample", "Data", "DataFile", "Dataset", "DatasetEntry", "GitServer",
           "GitToken", "GpuAllocation", "Job", "JobAttachment", "JobEvent", "JobFavorite", "JobParent", "JobPart",
           "JobSource", "JobStatus", "JobTag", "Lease", "Membership", "Node", "NodeCacheEntry", "NodeEvent", "NodeGpu",
           "Notification", "NotificationPreference", "Preprocessing", "PreprocessingOutput", "PreprocessingRun",
           "Registry", "RegistryCredential", "Role", "ServiceRun", "SiteSetting", "Tenant", "UsageRecord", "User",
           "utcnow"]
