# Translates an Ignition config of spec 1 ("ignitionVersion": 1) or spec 2.x into spec 3.0.0,
# the way Flatcar's Ignition accepts old configs (it translates them before it applies them).
# Debian's Ignition 2.14 reads spec 3 only. Used by ignition-firstboot; fails (jq `error`)
# on what it cannot translate faithfully, so a config is never half-applied.
#
# What maps:
#   spec 2: ignition.config.append -> config.merge; storage.{disks,raid,filesystems,files,
#           directories,links}; systemd.units (enable -> enabled); networkd.units ->
#           files under /etc/systemd/network; passwd.users (create{} flattened), groups.
#   spec 1: storage.filesystems[].files on the ROOT filesystem -> storage.files;
#           storage.arrays -> raid; systemd and networkd units; passwd.

def fail(msg): error("ignition-translate: " + msg);

# A spec-1 file's inline contents become a data URL.
def data_url: "data:," + (. | @uri);

# Partition sizes and starts: spec 1/2 count 512-byte sectors, spec 3.0 MiB.
def mib: if . == null then null else ((. * 512) / 1048576 | floor) end;

def drop_nulls: with_entries(select(.value != null));

def partitions:
  map({label: .label, number, sizeMiB: (.size | mib), startMiB: (.start | mib),
       typeGuid, guid} | drop_nulls);

def disks:
  map({device, wipeTable, partitions: ((.partitions // []) | partitions)} | drop_nulls);

def node_owner(o): if o == null then null else (o | drop_nulls) end;

# Files, directories and links of spec 2 live on a named filesystem; only "root" (the
# final root file system) has a place in spec 3 without a mount path.
def on_root:
  if (.filesystem // "root") != "root" then
    fail("\(.path): files on filesystem \(.filesystem) are not supported")
  else . end;

def file2:
  on_root
  | if .append == true then
      {path, mode, user: node_owner(.user), group: node_owner(.group),
       append: [(.contents // {}) | {source, compression, verification} | drop_nulls]}
    else
      {path, mode, user: node_owner(.user), group: node_owner(.group),
       # spec 2 replaces what is at the path; spec 3 refuses unless told to overwrite.
       overwrite: (if .overwrite == null then true else .overwrite end),
       contents: (if .contents == null then null
                  else (.contents | {source, compression, verification} | drop_nulls) end)}
    end
  | drop_nulls;

def dir2:
  on_root | {path, mode, user: node_owner(.user), group: node_owner(.group), overwrite} | drop_nulls;

def link2:
  on_root | {path, target, hard, user: node_owner(.user), group: node_owner(.group),
             overwrite: (if .overwrite == null then true else .overwrite end)} | drop_nulls;

def filesystem2:
  if .mount == null then
    # A spec-2.1+ "path" entry names an already mounted filesystem: only root is known.
    if (.name // "root") == "root" then empty else fail("filesystem \(.name) without mount") end
  else
    .mount | {device, format, label: .label, uuid,
              wipeFilesystem: (.wipeFilesystem // (if .create != null then true else null end)),
              options: (.options // .create.options)} | drop_nulls
  end;

def unit:
  {name, mask, contents,
   enabled: (if .enabled != null then .enabled elif .enable == true then true else null end),
   dropins: (if .dropins == null then null else (.dropins | map({name, contents} | drop_nulls)) end)}
  | drop_nulls;

def networkd_files:
  map(. as $u
      | (if $u.contents == null then empty else
          {path: "/etc/systemd/network/\($u.name)", mode: 420, overwrite: true,
           contents: {source: ($u.contents | data_url)}} end),
        (($u.dropins // [])[] |
          {path: "/etc/systemd/network/\($u.name).d/\(.name)", mode: 420, overwrite: true,
           contents: {source: (.contents | data_url)}}));

def user:
  (. + (.create // {})) | del(.create)
  | {name, passwordHash, sshAuthorizedKeys, uid, gecos, homeDir, noCreateHome, primaryGroup,
     groups, noUserGroup, system, noLogInit, shell} | drop_nulls;

def group: {name, gid, passwordHash, system} | drop_nulls;

def passwd:
  {users: ((.users // []) | map(user)), groups: ((.groups // []) | map(group))}
  | with_entries(select(.value != []));

def config_ref: {source, verification} | drop_nulls;

def from_v2:
  . as $c
  | {ignition: ({version: "3.0.0",
                 config: ((($c.ignition.config.append // []) | map(config_ref)) as $m
                          | ($c.ignition.config.replace) as $r
                          | {merge: (if $m == [] then null else $m end),
                             replace: (if $r == null then null else ($r | config_ref) end)}
                          | drop_nulls),
                 timeouts: $c.ignition.timeouts,
                 security: $c.ignition.security} | drop_nulls
                | with_entries(select(.value != {}))),
     storage: ({disks: (($c.storage.disks // []) | disks),
                raid: (($c.storage.raid // []) | map({name, level, devices, spares, options} | drop_nulls)),
                filesystems: [($c.storage.filesystems // [])[] | filesystem2],
                files: ((($c.storage.files // []) | map(file2)) + (($c.networkd.units // []) | networkd_files)),
                directories: (($c.storage.directories // []) | map(dir2)),
                links: (($c.storage.links // []) | map(link2))}
               | with_entries(select(.value != []))),
     systemd: ({units: (($c.systemd.units // []) | map(unit))} | with_entries(select(.value != []))),
     passwd: (($c.passwd // {}) | passwd)}
  | with_entries(select(.value != {}));

# Spec 1: files sit under the filesystem they are written to; the ROOT filesystem is "/".
def root_device: . == "/dev/disk/by-partlabel/ROOT" or . == "/dev/disk/by-label/ROOT";

def from_v1:
  . as $c
  | [($c.storage.filesystems // [])[]
     | . as $fs
     | if ($fs.device | root_device) and $fs.create == null then
         ($fs.files // [])[] | {path, mode, overwrite: true,
                                user: (if .uid == null then null else {id: .uid} end),
                                group: (if .gid == null then null else {id: .gid} end),
                                contents: {source: ((.contents // "") | data_url)}} | drop_nulls
       elif ($fs.files // []) != [] then
         fail("spec 1: files on \($fs.device) (not the ROOT filesystem) are not supported")
       else empty end] as $files
  | [($c.storage.filesystems // [])[] | select(.create != null)
     | {device, format, wipeFilesystem: (.create.force // false), options: .create.options}
     | drop_nulls] as $fss
  | {ignition: {version: "3.0.0"},
     storage: ({disks: (($c.storage.disks // []) | disks),
                raid: (($c.storage.arrays // []) | map({name, level, devices, spares} | drop_nulls)),
                filesystems: $fss,
                files: ($files + (($c.networkd.units // []) | networkd_files))}
               | with_entries(select(.value != []))),
     systemd: ({units: (($c.systemd.units // []) | map(unit))} | with_entries(select(.value != []))),
     passwd: (($c.passwd // {}) | passwd)}
  | with_entries(select(.value != {}));

if .ignitionVersion == 1 then from_v1
elif (.ignition.version // "" | startswith("2.")) then from_v2
elif (.ignition.version // "" | startswith("3.")) then .
else fail("unknown config version: \(.ignition.version // .ignitionVersion)")
end
