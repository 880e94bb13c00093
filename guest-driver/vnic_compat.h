/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vnic - the differences between the guest kernels vnic.ko supports, in one
 * place: Linux 6.1 (Debian 12), 6.12 (Debian 13) and the newest
 * trixie-backports kernel (7.x). The rest of the driver includes this
 * header instead of testing kernel versions itself.
 *
 * Each difference is tested by what the kernel provides (a header that
 * exists), not by version number where that is possible, so that a distro
 * kernel with a backport still builds.
 */
#ifndef _VNIC_COMPAT_H_
#define _VNIC_COMPAT_H_

/*
 * get_unaligned_le32() and friends: <asm/unaligned.h> became
 * <linux/unaligned.h> in 6.12; 6.1 has only the former.
 */
#if __has_include("linux/unaligned.h")
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

#endif /* _VNIC_COMPAT_H_ */
