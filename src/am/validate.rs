//! `amvalidate`: an operator class of this access method is sound when every
//! operator is the built-in btree comparison operator for its strategy and
//! types, since the index compares ordinals rather than calling operators.

use super::datum::kind_of_type;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The btree operator family holding the built-in comparisons of `typid`.
unsafe fn btree_family(typid: pg_sys::Oid) -> pg_sys::Oid {
    let opclass = pg_sys::GetDefaultOpClass(typid, pg_sys::BTREE_AM_OID);
    if opclass == pg_sys::InvalidOid {
        return pg_sys::InvalidOid;
    }
    pg_sys::get_opclass_family(opclass)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amvalidate(opclass: pg_sys::Oid) -> bool {
    let family = pg_sys::get_opclass_family(opclass);
    let intype = pg_sys::get_opclass_input_type(opclass);
    let mut ok = true;
    if kind_of_type(intype).is_none() {
        warning!(
            "learned operator class {}: input type {} is not supported",
            opclass.to_u32(),
            intype.to_u32()
        );
        ok = false;
    }
    let list = pg_sys::SearchSysCacheList(
        pg_sys::SysCacheIdentifier::AMOPSTRATEGY as i32,
        1,
        pg_sys::Datum::from(family),
        pg_sys::Datum::from(0usize),
        pg_sys::Datum::from(0usize),
    );
    for i in 0..(*list).n_members as usize {
        let tup = &mut (**(*list).members.as_mut_ptr().add(i)).tuple;
        let form = pg_sys::GETSTRUCT(tup) as *const pg_sys::FormData_pg_amop;
        let (left, right, strategy, op) = (
            (*form).amoplefttype,
            (*form).amoprighttype,
            (*form).amopstrategy,
            (*form).amopopr,
        );
        let bt = btree_family(left);
        let expected = if bt == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_opfamily_member(bt, left, right, strategy)
        };
        if kind_of_type(left).is_none()
            || kind_of_type(right).is_none()
            || !(1..=5).contains(&strategy)
            || expected != op
        {
            warning!("learned operator family {}: operator {} for ({}, {}) strategy {} is not the built-in comparison", family.to_u32(), op.to_u32(), left.to_u32(), right.to_u32(), strategy);
            ok = false;
        }
    }
    pg_sys::ReleaseCatCacheList(list);
    ok
}
