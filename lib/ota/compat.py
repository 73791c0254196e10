# Does an image belong on this device, and is it an update? Decided from the image's app descriptor
# (image.check_header's info) before the first erase. ONE implementation for every place that asks:
# the download (update.py), ota_revert (jobrun.py), and the host's `otactl image inspect` and
# `otactl release` (otactl/firmware_image.py imports this very file), so the host's verdict is the
# device's.
#
#   version, same = compat.check(info, running_project, running_version, version=None,
#                                project=None, allow_downgrade=False)
#   # version: the image's version (the trigger's when the descriptor has none), same: True when it
#   # is the running version (nothing to do)
#
# Raises OtaError (reason codes of the README):
#   wrong_product     the descriptor's project_name is not the one of the running firmware. Stock
#                     MicroPython leaves it empty (sdkconfig.base: CONFIG_APP_EXCLUDE_PROJECT_NAME_VAR):
#                     such an image is a valid C3 app that boots, has no `ota` package frozen in
#                     it, and takes the device off the fleet. A trigger's "project" overrides it:
#                     the name the image must carry, or "*" for any (covered by the signature).
#   version_mismatch  descriptor and trigger name different versions
#   bad_version       a version that cannot be ordered (an Arduino app says "esp-idf: v4.4.7 ..."),
#                     unless allow_downgrade
#   downgrade         older than the running version, unless allow_downgrade
from ota.errors import OtaError

ANY_PROJECT = "*"


def check_project(name, running_project, project=None):
    # name: the image's project_name; running_project: the running firmware's (None: unreadable);
    # project: the trigger's override. Raises OtaError wrong_product.
    want = running_project if project is None else project
    if want == ANY_PROJECT or (want is not None and name == want):
        return
    if want is None:
        raise OtaError("wrong_product", "the running firmware's app descriptor is unreadable: only a "
                       "trigger naming the image's project can install it")
    if not name:
        raise OtaError("wrong_product", "the image has no project name (stock MicroPython leaves it "
                       "empty, its main.py cannot start the agent); this device runs %r" % want)
    raise OtaError("wrong_product", "image is %r, this device runs %r" % (name, want))


def check_version(new, running, version=None, allow_downgrade=False):
    # new: the descriptor's version ("" when the build left it empty); running: the running version
    # ("" or None: unknown); version: the trigger's. Returns (version, same). Raises OtaError
    # version_mismatch, bad_version, downgrade.
    from ota.version import compare

    if version and new and new != version:
        raise OtaError("version_mismatch", "image says %s, trigger says %s" % (new, version))
    new = new or version  # stock builds leave it empty: then the trigger's word is all there is
    if not new:
        return "", False  # nothing known: goes ahead (the product check already passed)
    if not allow_downgrade:
        compare(new, new)  # bad_version: a version no device can order is never "newer"
    if not running:
        return new, False
    if new == running:
        return new, True
    try:
        order = compare(new, running)
    except OtaError:  # the running version does not parse: only allow_downgrade lets it through
        if not allow_downgrade:
            raise
        return new, False
    if order < 0 and not allow_downgrade:
        raise OtaError("downgrade", "%s is older than the running %s" % (new, running))
    return new, order == 0  # "1.2" and "1.2.0"


def check(info, running_project, running_version, version=None, project=None, allow_downgrade=False):
    check_project(info["project_name"], running_project, project)
    return check_version(info["version"], running_version, version, allow_downgrade)
